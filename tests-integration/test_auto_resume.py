"""A run killed in the middle of a stage resumes from the last finished stage and ends with the same metrics."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

os.environ.setdefault("SLIM_QUIET", "1")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["SLIM_QUIET"] = "1"
    import paddle
    import slim_auto
    from pathlib import Path

    KILL_AT = os.environ.get("SLIM_TEST_KILL_AT")  # a deterministic kill point at the first weights checkpoint
    if KILL_AT:
        import signal

        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == "p0-s0.npz":  # the pruned weights, complete in their temporary file
                if KILL_AT == "before-rename":
                    os.kill(os.getpid(), signal.SIGKILL)
                real_replace(src, dst, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)  # "after-write": in place, not yet recorded in state.json
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    from slim_auto.demo import digits_batches
    from slim_core import demo

    model, _ = demo.train_demo_model(epochs=2)
    xt, yt = demo.load_digits("test")
    recipe = {
        "stages": [{"prune": {"ratio": 0.25}}, {"distill": {}, "train": {"steps": int(sys.argv[2])}}],
        "train": {"learning_rate": 0.003},
    }
    result = slim_auto.AutoCompression(
        model, digits_batches(), slim_auto.accuracy_eval(xt, yt), config=recipe,
        target={"max_metric_drop": 0.5}, example_inputs=xt[:1], out_dir=sys.argv[1],
    ).compress()
    print("RESULT " + json.dumps([[c.name, c.status, c.metric] for c in result.candidates]))
    """
)


STEPS = 250


def _run(script, out, steps, timeout=300, kill_at=None):
    env = dict(os.environ, SLIM_QUIET="1")
    env.pop("SLIM_TEST_KILL_AT", None)
    if kill_at:
        env["SLIM_TEST_KILL_AT"] = kill_at
    proc = subprocess.run([sys.executable, str(script), str(out), str(steps)], capture_output=True, text=True, timeout=timeout, env=env)
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, (
            f"not killed at the first weights checkpoint: rc={proc.returncode}\n{proc.stderr[-3000:]}"
        )
        return None
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _finished_stages(out):
    state = out / "checkpoints" / "state.json"
    try:
        data = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return -1
    plans = data.get("plans") or [{"done": -1}]
    return plans[0]["done"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """The candidates of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("fresh")
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    return _run(script, tmp / "out", STEPS)


def test_killed_run_resumes_with_the_same_result(tmp_path, fresh):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    steps = STEPS
    killed = tmp_path / "killed"
    env = dict(os.environ, SLIM_QUIET="1")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed), str(steps)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        deadline = time.monotonic() + 240
        while _finished_stages(killed) < 1:  # wait until pruning is checkpointed and distillation runs
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "the first stage never finished"
            time.sleep(0.2)
        time.sleep(1.0)
        assert proc.poll() is None, "distillation finished before the kill; raise the step count"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    state = json.loads((killed / "checkpoints" / "state.json").read_text())
    assert state["plans"][0]["done"] == 1 and len(state["candidates"]) == 2  # killed mid-stage 2
    assert (killed / "model" / "slim.json").is_file()  # the best so far was already delivered

    resumed = _run(script, killed, steps)
    assert [c[:2] for c in resumed] == [["baseline", "ok"], ["prune", "ok"], ["prune > distill", "ok"]]
    assert resumed == fresh
    metrics = [[c["name"], c["metric"]] for c in json.loads((killed / "metrics.json").read_text())["candidates"]]
    assert metrics == [[c[0], c[2]] for c in fresh]


@pytest.mark.parametrize("kill_at", ["after-write", "before-rename"])
def test_run_killed_at_its_first_weights_checkpoint_resumes_with_the_same_result(tmp_path, fresh, kill_at):
    """SIGKILL from inside the run at the first checkpoint write (no timing): the pruned weights just
    renamed into place but not yet recorded in state.json, or complete in their temporary file."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    killed = tmp_path / "killed"
    _run(script, killed, STEPS, kill_at=kill_at)
    ckpt = killed / "checkpoints"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["plans"][0]["done"] == 0  # the pruning stage is not recorded as finished
    assert (ckpt / "p0-s0.npz").is_file() == (kill_at == "after-write")
    assert [p.name.startswith(".p0-s0.npz.slim-") for p in ckpt.glob(".*.tmp")] == ([True] if kill_at == "before-rename" else [])

    resumed = _run(script, killed, STEPS)
    assert [c[:2] for c in resumed] == [c[:2] for c in fresh] == [["baseline", "ok"], ["prune", "ok"], ["prune > distill", "ok"]]
    for got, want in zip(resumed, fresh):
        assert got[2] == pytest.approx(want[2], abs=0.01), got[0]  # accuracy on 360 digits: a one-sample flip is 0.003
    assert list(killed.rglob("*.tmp")) == []  # the rerun's write to the same checkpoint removed the stale temporary
