"""Run by test_data_parallel.py under `python -m paddle.distributed.launch --nproc_per_node 2`.

Also importable: ``build()`` gives the same distiller and data to the single-process reference.
"""

import sys
from pathlib import Path

import numpy as np
import paddle

from slim_distill import Distiller, fit


def build():
    paddle.seed(0)
    teacher = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.Tanh(), paddle.nn.Linear(16, 4))
    student = paddle.nn.Sequential(paddle.nn.Linear(8, 6), paddle.nn.Tanh(), paddle.nn.Linear(6, 4))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int64")
    cfg = {"logits": {"loss": "kl", "temperature": 2.0}, "pairs": [{"student": "1", "teacher": "1", "loss": "mse"}]}
    d = Distiller(student, teacher, cfg, example_inputs=x[:4])  # adds a Linear 6 -> 16 adaptor
    opt = paddle.optimizer.SGD(learning_rate=0.2, parameters=d.parameters())
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    return d, opt, batches


def main(out: Path) -> None:
    d, opt, batches = build()
    res = fit(d, batches, opt, epochs=2, checkpoint_dir=out / "ckpt")
    rank = paddle.distributed.get_rank()
    np.savez(out / f"rank{rank}.npz", steps=res.steps, **{k: v.numpy() for k, v in d.state_dict().items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
