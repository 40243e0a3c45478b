"""The full demo: train the bundled digits CNN, auto-compress it, write the report.

Example:
    >>> result = run_full_demo("slim-demo-out")   # doctest: +SKIP
    >>> print(result.to_markdown())               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from slim_auto.engine import AutoCompression, CompressionResult, accuracy_eval
from slim_core import demo as core_demo

__all__ = ["run_full_demo", "digits_batches"]


def digits_batches(batch_size: int = 64, seed: int = 0) -> list[tuple]:
    """The digits training split as ``(x, y)`` batches."""
    x, y = core_demo.load_digits("train", seed=seed)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


def run_full_demo(
    out_dir: str | Path = "slim-demo-out",
    *,
    epochs: int = 8,
    max_time: float | None = 600.0,
    target: dict | None = None,
) -> CompressionResult:
    """Train the digits CNN, compress it with no recipe to at most two points of accuracy drop, and report.

    Returns:
        The :class:`CompressionResult`; ``out_dir`` holds the model, ``metrics.json``,
        ``report.md`` and ``report.html``.
    """
    model, _ = core_demo.train_demo_model(epochs=epochs)
    xt, yt = core_demo.load_digits("test")
    ac = AutoCompression(
        model,
        digits_batches(),
        accuracy_eval(xt, yt),
        config={"train": {"epochs": 4, "learning_rate": 1e-3}},
        target=target or {"max_metric_drop": 0.02},
        example_inputs=xt[:1],
        out_dir=out_dir,
        max_time=max_time,
        overwrite=True,
        resume=False,
        title="slim demo: digits CNN auto-compression",
    )
    return ac.compress()
