import sys

from vmsite.cli import main

sys.exit(main())
