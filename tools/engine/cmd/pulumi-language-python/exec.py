# MAC's Python program runner, started by our pulumi-language-python host (main.go beside it).
# The upstream host ships a script of its own next to its binary; that module is not served here,
# so this one does the same job with the Python SDK's public runtime API: configure the engine
# and monitor connections from the environment, load the stack config, run the program's
# __main__ inside run_in_stack, and report errors to the engine.
import asyncio
import json
import os
import runpy
import sys
import traceback

# Exit code telling the host that the error was already reported to the engine.
REPORTED = 32


def main() -> int:
    env = os.environ
    program = sys.argv[1]
    sys.argv = [program, *sys.argv[2:]]

    import pulumi
    from pulumi.runtime import config, settings, stack

    settings.configure(
        settings.Settings(
            project=env["MAC_PULUMI_PROJECT"],
            stack=env["MAC_PULUMI_STACK"],
            monitor=env["MAC_PULUMI_MONITOR"],
            engine=env.get("MAC_PULUMI_ENGINE") or None,
            parallel=int(env.get("MAC_PULUMI_PARALLEL", "1")),
            dry_run=env.get("MAC_PULUMI_DRY_RUN") == "true",
            organization=env.get("MAC_PULUMI_ORGANIZATION") or None,
            root_directory=env.get("MAC_PULUMI_ROOT_DIRECTORY") or None,
        )
    )
    config.set_all_config(
        json.loads(env.get("PULUMI_CONFIG") or "{}") or {},
        json.loads(env.get("PULUMI_CONFIG_SECRET_KEYS") or "[]") or [],
    )

    def run() -> None:
        # A directory runs its __main__.py with the directory first on sys.path, like `python DIR`.
        runpy.run_path(program, run_name="__main__")

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(stack.run_in_stack(run))
    except KeyboardInterrupt:
        # The engine interrupts the program when it stops early (a resource failed, Ctrl-C): it
        # has reported why already.
        return REPORTED
    except pulumi.RunError as e:
        pulumi.log.error(str(e))
        return REPORTED
    except Exception:
        pulumi.log.error("Program failed with an unhandled exception:\n" + traceback.format_exc())
        return REPORTED
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
