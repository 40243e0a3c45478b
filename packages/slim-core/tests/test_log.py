"""The slim logger hierarchy, fd-level capture of native output, and a CLI that works without Paddle."""

import logging
import os
import subprocess
import sys

from slim_core.log import configure, get_logger, native_output

NO_PADDLE = """
import importlib.metadata as md, sys
sys.modules["paddle"] = None  # import paddle fails, as on a machine without it
sys.argv[0] = "/usr/bin/slim"
real = md.version
def version(name):
    if name.startswith("paddlepaddle"):
        raise md.PackageNotFoundError(name)
    return real(name)
md.version = version
from slim_core.cli import main
code = main(sys.argv[1:])
sys.exit(code)
"""


def test_module_loggers_share_the_slim_hierarchy():
    assert get_logger("slim_auto.engine").name == "slim.auto.engine"
    assert get_logger("slim.quant").name == "slim.quant"
    root = logging.getLogger("slim")
    assert get_logger("slim_auto.engine").parent is root  # no "slim.auto" logger exists, so the parent is "slim"


def test_native_output_goes_to_debug_and_user_lines_come_back(capfd):
    configure(0)
    with native_output():
        os.write(1, b"--- quantized 12 ops\n")
        os.write(2, b"I1203 09:00:00.000 123 analysis_predictor.cc:1] glog line\n")
        os.write(1, b"user line: accuracy 0.9\n")
    out, err = capfd.readouterr()
    assert "quantized 12 ops" not in out and "glog line" not in err
    assert "user line: accuracy 0.9" in out


def test_native_output_is_shown_with_verbose(capfd):
    configure(1)
    try:
        with native_output():
            os.write(1, b"--- quantized 3 ops\n")
    finally:
        configure(0)
    assert "quantized 3 ops" in capfd.readouterr().out


def _no_paddle(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", NO_PADDLE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_version_and_doctor_work_without_paddle():
    res = _no_paddle("--version")
    assert res.returncode == 0 and "paddle not installed" in res.stdout, res.stderr[-2000:]
    assert "warning" not in res.stderr
    res = _no_paddle("doctor")
    assert res.returncode == 1 and "[fail] slim needs PaddlePaddle" in res.stdout, res.stderr[-2000:]
    from importlib.metadata import entry_points

    if any(ep.name == "compress" for ep in entry_points(group="slim.commands")):  # slim-auto installed too
        res = _no_paddle("compress", "recipe.yaml")
        assert res.returncode == 2 and "`slim compress` needs Paddle" in res.stderr


def test_importing_slim_core_without_paddle_outside_the_command_still_fails_clearly():
    code = 'import sys; sys.modules["paddle"] = None\nimport slim_core'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode != 0 and "PaddleVersionError: slim needs PaddlePaddle 3.x" in res.stderr
