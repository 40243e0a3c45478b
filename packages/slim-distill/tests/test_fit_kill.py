"""fit() killed with SIGKILL at a checkpoint write resumes in a new process to the uninterrupted result.

The child process kills itself from inside, at an exact moment of the checkpoint write
(right after the first checkpoint is in place; between the temporary directory being
complete and its rename; between moving the old checkpoint aside and moving the new one
in), so the test never depends on timing.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("SLIM_QUIET", "1")

TESTS = Path(__file__).resolve().parent

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    os.environ["SLIM_QUIET"] = "1"
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import paddle
    from test_fit import XT, YT, _loader, _setup, _weights
    from slim_core.demo import evaluate
    import slim_distill
    fit_mod = sys.modules["slim_distill.fit"]  # the package exports the function under the same name

    ckpt, kill, out, init_seed = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if kill == "after-first-save":
        original = fit_mod._save_checkpoint

        def save_then_die(*args, **kwargs):
            original(*args, **kwargs)
            die()

        fit_mod._save_checkpoint = save_then_die
    elif kill in ("before-rename", "mid-swap"):
        # the second checkpoint write: "before-rename" dies at its first rename (the new
        # checkpoint complete in its temporary directory, the old one still in place);
        # "mid-swap" dies after the old one was moved aside, before the new one is moved in
        real_replace = os.replace
        seen = []

        def replace(src, dst, *args, **kwargs):
            if Path(dst).parent == ckpt:
                seen.append((Path(src).name, Path(dst).name))
                if len(seen) == (2 if kill == "before-rename" else 3):
                    die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace

    d, opt = _setup(0, init_seed=init_seed)
    res = fit_mod.fit(d, _loader(7), opt, epochs=2, checkpoint_dir=ckpt, save_every_steps=2,
                      eval_fn=lambda m: evaluate(m, XT, YT))
    np.savez(out, **_weights(d))
    out.with_suffix(".json").write_text(json.dumps(
        {"steps": res.steps, "resumed_from": res.resumed_from, "history": res.history, "lr": opt.get_lr()}))
    """
)


def _child(tmp_path, ckpt, kill, init_seed=0):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / f"result-{kill}-{init_seed}.npz"
    proc = subprocess.run(
        [sys.executable, str(script), str(TESTS), str(ckpt), kill, str(out), str(init_seed)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, SLIM_QUIET="1", OMP_NUM_THREADS="1"),
    )
    if kill != "none":
        assert proc.returncode == -signal.SIGKILL, f"the child was not killed at the write: rc={proc.returncode}\n{proc.stderr[-3000:]}"
        assert not out.exists()
        return None
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as data:
        weights = {k: data[k] for k in data.files}
    return weights, json.loads(out.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    return _child(tmp, tmp / "ckpt", "none")


def _state(ckpt):
    return json.loads((ckpt / "last" / "state.json").read_text())["state"]


@pytest.mark.parametrize(
    "kill, resumed_from",
    [("after-first-save", 2), ("before-rename", 2), ("mid-swap", 2)],
)
def test_fit_killed_at_a_checkpoint_write_resumes_to_the_uninterrupted_result(tmp_path, reference, kill, resumed_from):
    ckpt = tmp_path / "ckpt"
    _child(tmp_path, ckpt, kill)
    leftovers = sorted(p.name for p in ckpt.iterdir() if p.name != "last")
    if kill == "after-first-save":
        assert leftovers == []
    else:  # the interrupted write left its temporary directory (and, mid-swap, the moved-aside checkpoint)
        assert any(n.startswith(".last.slim-") and n.endswith(".tmp") for n in leftovers), leftovers

    # a new process with other initial weights continues from the checkpoint written before the kill
    weights, info = _child(tmp_path, ckpt, "none", init_seed=123)
    ref_weights, ref_info = reference
    assert info["resumed_from"] == resumed_from
    assert info["steps"] == ref_info["steps"] == 12
    assert set(weights) == set(ref_weights)
    for k in ref_weights:
        np.testing.assert_allclose(weights[k], ref_weights[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert [h["loss"] for h in info["history"]] == pytest.approx([h["loss"] for h in ref_info["history"]], rel=1e-5)
    assert [h["metric"] for h in info["history"]] == pytest.approx([h["metric"] for h in ref_info["history"]], abs=0.02)
    assert info["lr"] == pytest.approx(ref_info["lr"])
    assert _state(ckpt)["global_step"] == 12
    assert [p.name for p in ckpt.iterdir()] == ["last"]  # the next write removed the stale temporaries
