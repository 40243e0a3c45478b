"""Helpers for the interruption tests of :mod:`slim_auto.isolate`, importable by the child process.

``python isolate_targets.py PIDFILE WORK_DIR`` is a parent running :func:`wait_forever`
isolated, as the ``slim`` command would, for a test to kill.
"""

import os
import sys
import time
from pathlib import Path


def wait_forever(pidfile: str) -> None:
    """The child: say who it is, then run until something stops it."""
    tmp = Path(pidfile + ".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, pidfile)  # the test reads a complete pid
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    import argparse

    from slim_auto.isolate import run_isolated
    from slim_core.cli import run_command

    def run(args: argparse.Namespace) -> int:
        run_isolated("isolate_targets:wait_forever", {"pidfile": sys.argv[1]}, timeout=600, work_dir=sys.argv[2])
        return 0

    sys.exit(run_command(argparse.Namespace(command="isolate-test", func=run, interrupt_hint="nothing to resume")))
