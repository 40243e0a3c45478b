"""An interrupted or killed run never leaves its isolated child process running (real processes, real signals)."""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slim_auto.isolate import IsolatedError, run_isolated
from slim_core.cli import run_command

TARGETS = Path(__file__).with_name("isolate_targets.py")
DEADLINE_S = 60.0  # generous: only a broken cleanup waits this long


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for its new parent to reap it has stopped running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int) -> None:
    end = time.monotonic() + DEADLINE_S
    while not _gone(pid):
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)  # do not leave it behind the test either
            pytest.fail(f"the isolated child {pid} is still running {DEADLINE_S:g} s after its parent stopped")
        time.sleep(0.05)


def _wait_for(pidfile: Path, alive=lambda: True) -> int | None:
    end = time.monotonic() + DEADLINE_S * 3
    while not pidfile.exists():
        if not alive() or time.monotonic() > end:
            return None
        time.sleep(0.05)
    return int(pidfile.read_text())


@pytest.mark.parametrize(
    ("sig", "rc", "how"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")], ids=["sigterm", "ctrl-c"]
)
def test_an_interrupted_command_stops_and_reaps_its_child_with_one_message(tmp_path, capsys, sig, rc, how):
    work, pidfile = tmp_path / "work", tmp_path / "child.pid"
    work.mkdir()
    seen: list[int] = []

    def interrupt_once_the_child_runs() -> None:
        pid = _wait_for(pidfile)
        if pid is not None:
            seen.append(pid)
            os.kill(os.getpid(), sig)  # this process: the command running the isolated call

    def command(args: argparse.Namespace) -> int:
        run_isolated("isolate_targets:wait_forever", {"pidfile": str(pidfile)}, timeout=DEADLINE_S * 3, work_dir=work)
        return 0

    threading.Thread(target=interrupt_once_the_child_runs, daemon=True).start()
    code = run_command(argparse.Namespace(command="isolate-test", func=command, interrupt_hint="nothing to resume"))
    assert seen, "the isolated child never started"
    assert _gone(seen[0])  # stopped and reaped before the interruption went on
    assert code == rc
    err = capsys.readouterr().err
    assert err.strip() == f"slim isolate-test: interrupted ({how}); nothing to resume"  # no traceback, no child output
    assert list(work.iterdir()) == []  # the job's temporary directory went with it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal (prctl) is Linux only")
def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path):
    work, pidfile = tmp_path / "work", tmp_path / "child.pid"
    work.mkdir()
    parent = subprocess.Popen(
        [sys.executable, str(TARGETS), str(pidfile), str(work)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    child = _wait_for(pidfile, alive=lambda: parent.poll() is None)
    if child is None:
        parent.kill()
        pytest.fail(f"the isolated child never started (parent rc={parent.returncode}):\n{parent.communicate()[1][-3000:]}")
    parent.kill()  # no cleanup can run in the parent
    parent.communicate(timeout=DEADLINE_S)
    _wait_gone(child)


def test_a_timeout_kills_and_reaps_the_child(tmp_path):
    pidfile = tmp_path / "child.pid"
    with pytest.raises(IsolatedError, match="wait_forever did not finish within 3 s"):
        run_isolated("isolate_targets:wait_forever", {"pidfile": str(pidfile)}, timeout=3, work_dir=tmp_path)
    if pidfile.exists():  # it started within the timeout (as it should): it must be gone now
        assert _gone(int(pidfile.read_text()))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("slim-isolate-")]
