import json
import subprocess
import sys

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
