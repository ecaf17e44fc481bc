"""`python -m lab up|down|kill|...`: the same commands as `mac-lab` (see lab/cli.py)."""

from lab.cli import main

if __name__ == "__main__":
    main()
