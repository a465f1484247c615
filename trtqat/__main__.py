"""``python -m trtqat`` is the same as the ``trtqat`` command; under ``torchrun`` each rank ends with ``os._exit``.

Why: a rank of a CPU (gloo) run sometimes died of SIGABRT after its work was done and its process group
destroyed: ``terminate called without an active exception`` while the interpreter tore down torch's C++
state (no Python frame left). torchrun then reported the run as failed, and stopped the other rank, although
every file had been written. It showed only under load (twice in CI, once in five runs with the cores busy).
Under torchrun (``WORLD_SIZE`` > 1) a rank therefore flushes its streams and logging and leaves with its exit
code, skipping that teardown. Single-process runs exit normally.
"""
import os


def _rank_of_a_distributed_run() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def run() -> None:
    from .cli import main

    if not _rank_of_a_distributed_run():
        main()
        return
    import logging
    import sys

    code = 0
    try:
        main()
    except SystemExit as exc:  # click ends every command with sys.exit
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"): print it and exit 1, as the interpreter does
            print(exc.code, file=sys.stderr)
            code = 1
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


if __name__ == "__main__":
    run()
