"""fit() under `paddle.distributed.launch` with two CPU processes (gloo): gradients are synchronised.

Takes some 20-40 s (two fresh Paddle processes); deselect with ``-m "not distributed"``.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from dist_worker import build

from slim_core.progress import quiet

HERE = Path(__file__).parent


@pytest.mark.distributed
@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks CPU data parallelism over gloo; a GPU build would need two GPUs")
def test_two_process_data_parallel_matches_one_process_on_the_joint_batches(tmp_path):
    env = dict(os.environ, SLIM_QUIET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        "2",
        "--log_dir",
        str(tmp_path / "log"),
        str(HERE / "dist_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    logs = (
        "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "log").glob("*")))
        if (tmp_path / "log").exists()
        else ""
    )
    assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs}"
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["steps"]) == int(r1["steps"]) == 8  # 8 batches split between 2 ranks, 2 epochs
    assert (tmp_path / "ckpt" / "last" / "model.npz").is_file()

    # one process, each step on the two batches the ranks saw together
    d, opt, batches = build()
    joint = [(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])) for a, b in zip(batches[0::2], batches[1::2])]
    with quiet():
        from slim_distill import fit

        fit(d, joint, opt, epochs=2)
    ref = {k: v.numpy() for k, v in d.state_dict().items()}
    assert "adaptors.p0_0.weight" in ref
    for k, v in ref.items():
        np.testing.assert_allclose(r0[k], r1[k], rtol=1e-6, atol=1e-7, err_msg=f"ranks disagree on {k}")
        np.testing.assert_allclose(r0[k], v, rtol=1e-4, atol=1e-6, err_msg=f"data parallel differs from the joint-batch run on {k}")
    assert not np.allclose(ref["student.0.weight"], build()[0].state_dict()["student.0.weight"].numpy())  # it trained
