"""Helpers for slim's own test suites (and for packages built on slim).

Example:
    >>> undeclared_sibling_imports("packages/slim-prune")  # doctest: +SKIP
    []
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import tomllib

__all__ = ["undeclared_sibling_imports", "declared_siblings", "assert_close_up_to_flips", "paddle_static_ptq"]

_SIBLING = re.compile(r"^slim_(core|analysis|prune|quant|distill|nas|deploy|auto)$")


def declared_siblings(package_dir: str | Path) -> set[str]:
    """Import names of the slim siblings a package declares in its pyproject.toml."""
    data = tomllib.loads((Path(package_dir) / "pyproject.toml").read_text())
    deps = data["project"].get("dependencies", [])
    names = {re.split(r"[\[=<>!~ ;]", d, maxsplit=1)[0] for d in deps}
    return {n.replace("-", "_") for n in names if n.startswith("slim-")}


def undeclared_sibling_imports(package_dir: str | Path) -> list[str]:
    """``file:line module`` for every import of a slim sibling the package does not declare."""
    root = Path(package_dir)
    own = root.name.replace("-", "_")
    allowed = declared_siblings(root) | {own}
    bad = []
    for path in sorted((root / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for mod in mods:
                top = mod.split(".")[0]
                if _SIBLING.match(top) and top not in allowed:
                    bad.append(f"{path.relative_to(root)}:{node.lineno} {mod}")
    return bad


def assert_close_up_to_flips(
    actual: Any, desired: Any, *, rtol: float = 1e-4, atol: float = 1e-4, max_flipped: float = 0.05, flip_tol: float = 0.1
) -> None:
    """Assert that two runs of one quantized model agree, allowing rounding-boundary flips.

    Two correct implementations of the same quantized model (fake-quant training graph
    and converted INT8 model, or two runtimes) round a value lying on a rounding
    boundary differently now and then: one integer code flips and moves a few outputs
    by up to a quantization step. So most elements must agree within ``rtol``/``atol``,
    at most ``max_flipped`` of them may differ more, and none by more than
    ``flip_tol * max(1, max |desired|)``. A wrong conversion moves most elements and fails.

    Example:
        >>> import numpy as np
        >>> ref = np.linspace(-1, 1, 100)
        >>> got = ref.copy(); got[3] += 0.03   # one flipped code
        >>> assert_close_up_to_flips(got, ref)
    """
    import numpy as np

    a, d = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    assert a.shape == d.shape, f"shapes differ: {a.shape} vs {d.shape}"
    off = ~np.isclose(a, d, rtol=rtol, atol=atol)
    worst = float(np.abs(a - d).max()) if a.size else 0.0
    bound = flip_tol * max(1.0, float(np.abs(d).max()) if d.size else 1.0)
    assert off.mean() <= max_flipped and worst <= bound, (
        f"{int(off.sum())} of {off.size} elements differ beyond rtol={rtol}, atol={atol} (at most {max_flipped:.0%} may, "
        f"from rounding-boundary flips); largest difference {worst:.4g} (allowed {bound:.4g})"
    )


def paddle_static_ptq(model_dir: str | Path, out_dir: str | Path, batches: list[Any], *, prefix: str = "model_legacy") -> Path:
    """Quantize a legacy inference model with Paddle's own static PTQ (abs-max, QDQ format) into ``out_dir``.

    Test fixture for INT8 paths that must not depend on slim-quant: the result is what
    PaddleSlim-era tools produce (quantize/dequantize ops, int8 weights on disk).

    Args:
        model_dir: directory holding ``{prefix}.pdmodel`` and ``{prefix}.pdiparams``.
        out_dir: where the quantized model is written under the same file names.
        batches: calibration arrays for the input ``x``.

    Example:
        >>> paddle_static_ptq("out/fp32", "out/int8", [x[:16], x[16:32]])  # doctest: +SKIP
        PosixPath('out/int8')
    """
    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    with paddle.pir_utils.OldIrGuard():
        paddle.enable_static()
        try:
            ptq = PostTrainingQuantization(
                executor=paddle.static.Executor(paddle.CPUPlace()),
                model_dir=str(model_dir),
                model_filename=f"{prefix}.pdmodel",
                params_filename=f"{prefix}.pdiparams",
                data_loader=lambda: ({"x": b} for b in batches),
                batch_nums=len(batches),
                algo="abs_max",
                onnx_format=True,
                quantizable_op_type=["conv2d", "matmul_v2"],
            )
            ptq.quantize()
            ptq.save_quantized_model(str(out_dir), model_filename=f"{prefix}.pdmodel", params_filename=f"{prefix}.pdiparams")
        finally:
            paddle.disable_static()
    return Path(out_dir)
