import json
import os
import stat
import subprocess
import sys
import time

import pytest

from slim_core import OutputExistsError, atomic_dir, atomic_write, progress, quiet
from slim_core.cli import installed_packages, main


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_all_or_nothing(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a").write_text("1")
            raise RuntimeError("boom")
    assert not out.exists()
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(OutputExistsError):
        with atomic_dir(out):
            pass


def test_progress_quiet_returns_iterable():
    with quiet():
        assert list(progress(range(3))) == [0, 1, 2]


def test_cli_version_lists_core(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    out = capsys.readouterr().out
    assert "slim-core" in out and "paddle 3." in out
    assert "slim-core" in installed_packages()


def test_cli_doctor(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[ok] paddle" in out and "oneDNN" in out


def test_cli_demo_writes_model(tmp_path, capsys):
    # call slim-core's own demo: with slim-auto installed, `slim demo` is slim-auto's full flow
    import argparse

    from slim_core.cli import _demo

    out = tmp_path / "demo"
    assert _demo(argparse.Namespace(out=str(out), epochs=3)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8
    assert (out / "model.json").exists() and (out / "model.pdiparams").exists()
    assert "test accuracy" in capsys.readouterr().out


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "slim_core.cli", "--help"], capture_output=True, text=True, check=True)
    assert "doctor" in res.stdout and "demo" in res.stdout


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    saved = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(saved)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_respect_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    with atomic_write(tmp_path / "out.txt") as fh:
        fh.write("x")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "a").write_text("1")
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "model" / "a").stat().st_mode) == file_mode


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_write(target) as fh:
        fh.write("new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from slim_core.atomic import _HOST, remove_stale_temporaries

    dead = tmp_path / f".out.txt.slim-{_HOST}-{_dead_pid()}-0badc0de.tmp"
    dead.write_text("half")
    dead_dir = tmp_path / f".model.slim-{_HOST}-{_dead_pid()}-0badc0de.tmp"
    dead_dir.mkdir()
    (dead_dir / "model.json").write_text("half")
    live = tmp_path / f".out.txt.slim-{_HOST}-{os.getppid()}-0123abcd.tmp"  # a running process: never touched
    live.write_text("being written")
    other_host = tmp_path / ".out.txt.slim-ffffffff-1-0123abcd.tmp"  # another host, recent: kept
    other_host.write_text("remote")
    old_style = tmp_path / ".out.txt.ab12cd_9.tmp"  # earlier versions' mkstemp name, a day old: removed
    old_style.write_text("old")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_style, (day_ago, day_ago))
    young_old_style = tmp_path / ".out.txt.zz12cd_9.tmp"  # same, recent: its writer may still run
    young_old_style.write_text("young")
    user_file = tmp_path / ".out.txt.mine.tmp"  # not a name slim gives: never touched
    user_file.write_text("user")
    with atomic_write(tmp_path / "out.txt") as fh:
        fh.write("x")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "a").write_text("1")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out.txt", "model", live.name, other_host.name, young_old_style.name, user_file.name])
    os.utime(other_host, (day_ago, day_ago))
    assert remove_stale_temporaries(tmp_path / "out.txt") == [other_host]


def test_a_directory_replacement_killed_between_its_renames_keeps_the_previous_version(tmp_path):
    from slim_core.atomic import restore_interrupted_dir

    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("v1")
    os.replace(out, tmp_path / ".model.old")  # what a kill after atomic_dir's first rename leaves
    assert not out.exists()
    assert restore_interrupted_dir(out) and (out / "a").read_text() == "v1"
    assert not restore_interrupted_dir(out)  # nothing to restore: no change
    os.replace(out, tmp_path / ".model.old")
    with pytest.raises(OutputExistsError):  # the restored version counts as existing
        with atomic_dir(out):
            pass
    assert (out / "a").read_text() == "v1"
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "a").write_text("v2")
    assert (out / "a").read_text() == "v2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_an_interrupted_command_ends_with_one_line_after_its_cleanup_ran(capsys, sig):
    import argparse
    import signal

    from slim_core import SlimError
    from slim_core.cli import run_command

    cleaned = []

    def command(args):
        try:
            os.kill(os.getpid(), getattr(signal, sig))
            while True:  # the signal arrives as an exception in this thread
                time.sleep(0.01)
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    code = run_command(argparse.Namespace(command="x", func=command, interrupt_hint="run it again"))
    assert cleaned and code == (143 if sig == "SIGTERM" else 130)
    assert capsys.readouterr().err == f"slim x: interrupted ({'SIGTERM' if sig == 'SIGTERM' else 'Ctrl-C'}); run it again\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the default action is back outside commands

    def failing(args):
        raise SlimError("bad input")

    assert run_command(argparse.Namespace(command="x", func=failing)) == 2
    assert capsys.readouterr().err == "slim x: error: bad input\n"
