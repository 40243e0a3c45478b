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

import numpy as np
import tomllib

__all__ = [
    "undeclared_sibling_imports",
    "declared_siblings",
    "assert_close_up_to_flips",
    "paddle_static_ptq",
    "model_fingerprint",
    "assert_model_unchanged",
    "clas_style_net",
]

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


def model_fingerprint(model: Any) -> dict[str, Any]:
    """Everything a rollback must put back: the sublayer tree (paths, types, object ids) and every
    parameter and buffer (object id, shape, dtype, a copy of the values), plus the plain attributes.

    Example:
        >>> before = model_fingerprint(model)      # doctest: +SKIP
        >>> assert_model_unchanged(before, model)  # doctest: +SKIP
    """
    tree = [(name, type(layer).__name__, id(layer)) for name, layer in model.named_sublayers(include_self=True)]
    tensors = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        tensors[name] = (id(t), list(t.shape), str(t.dtype), np.array(t.numpy(), copy=True), bool(t.stop_gradient))
    attrs = {
        name: sorted((k, repr(v)) for k, v in vars(layer).items() if isinstance(v, (int, float, str, bool, tuple, list, type(None))))
        for name, layer in model.named_sublayers(include_self=True)
    }
    return {"tree": tree, "tensors": tensors, "attrs": attrs}


def assert_model_unchanged(before: dict[str, Any], model: Any) -> None:
    """AssertionError naming the first difference between ``before`` (a :func:`model_fingerprint`) and ``model``."""
    after = model_fingerprint(model)
    if after["tree"] != before["tree"]:
        diff = [(b, a) for b, a in zip(before["tree"], after["tree"]) if a != b] or [(before["tree"][-1:], after["tree"][-1:])]
        raise AssertionError(f"sublayer tree changed (first difference {diff[0][0]} -> {diff[0][1]})")
    assert list(after["tensors"]) == list(before["tensors"]), "parameter/buffer names changed"
    for name, (oid, shape, dtype, arr, sg) in before["tensors"].items():
        oid2, shape2, dtype2, arr2, sg2 = after["tensors"][name]
        assert oid2 == oid, f"{name}: a different tensor object"
        assert (shape2, dtype2, sg2) == (shape, dtype, sg), f"{name}: {shape, dtype, sg} -> {shape2, dtype2, sg2}"
        assert np.array_equal(arr2, arr, equal_nan=True), f"{name}: values changed"
    assert after["attrs"] == before["attrs"], "layer attributes changed"


def clas_style_net(num_classes: int = 10, width: int = 8, in_channels: int = 3) -> Any:
    """A small CNN written the way PaddleClas writes its nets (for tests): conv-BN-hardswish stem,
    LayerList-held blocks with depthwise convs and a squeeze-excite gate using ``paddle.multiply``,
    global pooling and a Linear head. Takes ``[N, in_channels, 32, 32]`` (any spatial size works).

    Example:
        >>> net = clas_style_net()                                   # doctest: +SKIP
        >>> net(paddle.randn([2, 3, 32, 32])).shape                  # doctest: +SKIP
        [2, 10]
    """
    import paddle
    from paddle import nn

    class ConvBNLayer(nn.Layer):
        def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias_attr=False)
            self.bn = nn.BatchNorm2D(cout)
            self.act = nn.Hardswish()

        def forward(self, x: Any) -> Any:
            return self.act(self.bn(self.conv(x)))

    class SEModule(nn.Layer):
        def __init__(self, c: int, reduction: int = 4) -> None:
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2D(1)
            self.conv1 = nn.Conv2D(c, max(c // reduction, 1), 1)
            self.conv2 = nn.Conv2D(max(c // reduction, 1), c, 1)

        def forward(self, x: Any) -> Any:
            s = paddle.nn.functional.relu(self.conv1(self.avg_pool(x)))
            s = paddle.nn.functional.hardsigmoid(self.conv2(s))
            return paddle.multiply(x=x, y=s)

    class Block(nn.Layer):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.dw = ConvBNLayer(cin, cin, 3, stride, groups=cin)
            self.se = SEModule(cin)
            self.pw = ConvBNLayer(cin, cout, 1)

        def forward(self, x: Any) -> Any:
            return self.pw(self.se(self.dw(x)))

    class ClasStyleNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.stem = ConvBNLayer(in_channels, width, 3, 2)
            self.blocks = nn.LayerList([Block(width, width * 2, 2), Block(width * 2, width * 2, 1)])
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(width * 2, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return self.fc(paddle.flatten(self.pool(x), 1))

    paddle.seed(0)
    return ClasStyleNet()
