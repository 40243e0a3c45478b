"""Structural re-parameterization: multi-branch training blocks that merge into one conv.

``reparameterize(model, RepConfig(block="repvgg"), input_spec)`` replaces each
plain conv + BatchNorm pair (found on the traced program) with a training-time
block; ``merge(model)`` collapses every block back into a single ``Conv2D`` with
bias for deployment, with the same outputs to float tolerance.

Blocks (registry :data:`REP_BLOCKS`, add your own with ``@REP_BLOCKS.register``):

- ``repvgg``: KxK conv-BN + 1x1 conv-BN + identity BN (when shapes allow).
- ``acb``: KxK conv-BN + 1xK conv-BN + Kx1 conv-BN (asymmetric convolution block).
- ``dbb``: KxK conv-BN + 1x1 conv-BN + 1x1 conv-BN -> KxK conv-BN + 1x1 conv-BN -> KxK average -> BN
  (diverse branch block; ``groups == 1`` only).

With ``init="preserve"`` the main branch copies the original conv and BN and the new
branches start with zero BN scale, so the reparameterized model computes exactly
what the original did; training then grows the extra branches.

Example:
    >>> train_model = reparameterize(model, RepConfig(block="acb"), [None, 3, 32, 32])   # doctest: +SKIP
    >>> # ... train ...
    >>> deploy_model = merge(train_model)                                               # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from slim_core import ConfigError, Registry, SlimConfig, require_paddle
from slim_core.bn_fold import bn_scale_shift, find_linear_bn_pairs
from slim_core.layers import get_sublayer, set_sublayer
from slim_core.rollback import in_place
from slim_core.spec import InputSpecLike

__all__ = ["RepConfig", "RepBlock", "RepVGGBlock", "ACBlock", "DBBlock", "REP_BLOCKS", "reparameterize", "merge", "merge_", "rep_blocks"]

REP_BLOCKS = Registry("re-parameterization block")

paddle = require_paddle()
nn = paddle.nn


@dataclass(frozen=True)
class RepConfig(SlimConfig):
    """Which conv+BN pairs to turn into which training-time block.

    Attributes:
        block: a name in :data:`REP_BLOCKS` (``repvgg``, ``acb``, ``dbb``).
        init: ``preserve`` (the new model computes what the old one did) or ``fresh``
            (all branches newly initialized, for training from scratch).
        kernel_sizes: only convs with these (square, odd) kernel sizes are replaced.
        skip: sublayer paths of convs to leave alone.
    """

    block: str = "repvgg"
    init: Literal["preserve", "fresh"] = "preserve"
    kernel_sizes: tuple[int, ...] = (3,)
    skip: tuple[str, ...] = ()

    def validate(self) -> None:
        REP_BLOCKS.get(self.block)
        if not self.kernel_sizes:
            raise ConfigError("RepConfig.kernel_sizes must name at least one kernel size")
        for k in self.kernel_sizes:
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"RepConfig.kernel_sizes holds {k}; only odd positive sizes keep the branches aligned")


def _conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], stride: int, padding: int | tuple[int, int], groups: int) -> Any:
    seq = nn.Sequential(
        nn.Conv2D(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias_attr=False),
        nn.BatchNorm2D(cout),
    )
    return seq


def _fuse(conv_w: np.ndarray, bn: Any, bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    s, t = bn_scale_shift(bn)
    b = (bias if bias is not None else np.zeros(conv_w.shape[0])) * s + t
    return conv_w * s.reshape(-1, 1, 1, 1), b


def _w(param: Any) -> np.ndarray:
    return np.asarray(param.numpy(), dtype="float64")


def _pad_to(kernel: np.ndarray, k: int) -> np.ndarray:
    kh, kw = kernel.shape[2:]
    ph, pw = (k - kh) // 2, (k - kw) // 2
    return np.pad(kernel, ((0, 0), (0, 0), (ph, k - kh - ph), (pw, k - kw - pw)))


def _zero_gamma(bn: Any) -> None:
    bn.weight.set_value(paddle.zeros_like(bn.weight))


class RepBlock(nn.Layer):
    """Base of the training-time blocks: a sum of branches equivalent to one KxK conv with bias.

    Subclasses define the branches and :meth:`merged_kernel`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, groups: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        self.dense = _conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups)

    @classmethod
    def unsupported(cls, conv: Any) -> str | None:
        """Why ``conv`` cannot become this block (None when it can)."""
        return None

    def merged_kernel(self) -> tuple[np.ndarray, np.ndarray]:
        """``(weight [out, in/groups, k, k], bias [out])`` of the single equivalent conv (float64)."""
        return _fuse(_w(self.dense[0].weight), self.dense[1])

    def to_conv(self) -> Any:
        """A new ``Conv2D`` with bias computing what this block computes in eval mode."""
        w, b = self.merged_kernel()
        conv = nn.Conv2D(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride, padding=self.padding, groups=self.groups
        )
        conv.weight.set_value(paddle.to_tensor(w.astype("float32")))
        conv.bias.set_value(paddle.to_tensor(b.astype("float32")))
        return conv

    def preserve(self, conv: Any, bn: Any) -> None:
        """Copy ``conv``/``bn`` into the main branch and zero the other branches' BN scale."""
        self.dense[0].weight.set_value(conv.weight)
        self.dense[1].set_state_dict(bn.state_dict())
        if conv.bias is not None:  # fold the conv bias into the BN shift: BN(z + c) = BN(z) + s * c
            s, _ = bn_scale_shift(bn)
            shift = np.asarray(self.dense[1].bias.numpy(), "float64") + s * _w(conv.bias)
            self.dense[1].bias.set_value(paddle.to_tensor(shift.astype("float32")))
        for sub in self.sublayers():
            if isinstance(sub, nn.BatchNorm2D) and sub is not self.dense[1]:
                _zero_gamma(sub)


@REP_BLOCKS.register("repvgg")
class RepVGGBlock(RepBlock):
    """RepVGG: KxK conv-BN + 1x1 conv-BN + identity BN (identity only when in == out and stride 1)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        self.one = _conv_bn(in_channels, out_channels, 1, stride, padding - kernel_size // 2, groups)
        self.identity = nn.BatchNorm2D(in_channels) if in_channels == out_channels and stride == 1 else None

    def forward(self, x: Any) -> Any:
        y = self.dense(x) + self.one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return y

    def merged_kernel(self) -> tuple[np.ndarray, np.ndarray]:
        w, b = super().merged_kernel()
        w1, b1 = _fuse(_w(self.one[0].weight), self.one[1])
        w, b = w + _pad_to(w1, self.kernel_size), b + b1
        if self.identity is not None:
            per_group = self.in_channels // self.groups
            ident = np.zeros((self.in_channels, per_group, self.kernel_size, self.kernel_size))
            c = self.kernel_size // 2
            for i in range(self.in_channels):
                ident[i, i % per_group, c, c] = 1.0
            wi, bi = _fuse(ident, self.identity)
            w, b = w + wi, b + bi
        return w, b


@REP_BLOCKS.register("acb")
class ACBlock(RepBlock):
    """ACNet: KxK conv-BN + 1xK conv-BN + Kx1 conv-BN."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        k, p = kernel_size, padding - kernel_size // 2
        self.hor = _conv_bn(in_channels, out_channels, (1, k), stride, (p, padding), groups)
        self.ver = _conv_bn(in_channels, out_channels, (k, 1), stride, (padding, p), groups)

    def forward(self, x: Any) -> Any:
        return self.dense(x) + self.hor(x) + self.ver(x)

    def merged_kernel(self) -> tuple[np.ndarray, np.ndarray]:
        w, b = super().merged_kernel()
        for branch in (self.hor, self.ver):
            wb, bb = _fuse(_w(branch[0].weight), branch[1])
            w, b = w + _pad_to(wb, self.kernel_size), b + bb
        return w, b


class _BNAndPad(nn.Layer):
    """BatchNorm, then padding with the value BN gives a zero input, so a following conv
    sees the same border as the merged conv sees with zero padding of the block input."""

    def __init__(self, channels: int, pad: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2D(channels)
        self.pad = pad

    def forward(self, x: Any) -> Any:
        y = self.bn(x)
        if self.pad > 0:
            w = self.bn.weight if self.bn.weight is not None else 1.0
            fill = (self.bn.bias - self.bn._mean * w / paddle.sqrt(self.bn._variance + self.bn._epsilon)).reshape([1, -1, 1, 1])
            y = nn.functional.pad(y - fill, [self.pad] * 4) + fill
        return y


@REP_BLOCKS.register("dbb")
class DBBlock(RepBlock):
    """Diverse Branch Block: KxK, 1x1, 1x1 -> KxK and 1x1 -> average branches, each with BN (groups 1)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1, groups: int = 1
    ) -> None:
        if groups != 1:
            raise ConfigError("DBBlock supports groups=1 only")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups)
        k = kernel_size
        self.one = _conv_bn(in_channels, out_channels, 1, stride, padding - k // 2, 1)
        self.seq_1x1 = nn.Conv2D(in_channels, in_channels, 1, bias_attr=False)
        self.seq_pad = _BNAndPad(in_channels, padding)
        self.seq_kxk = nn.Conv2D(in_channels, out_channels, k, stride=stride, padding=0, bias_attr=False)
        self.seq_bn = nn.BatchNorm2D(out_channels)
        self.avg_1x1 = nn.Conv2D(in_channels, out_channels, 1, bias_attr=False)
        self.avg_pad = _BNAndPad(out_channels, padding)
        self.avg_pool = nn.AvgPool2D(k, stride=stride, padding=0)
        self.avg_bn = nn.BatchNorm2D(out_channels)
        if in_channels == out_channels:  # start the 1x1 of the sequential branch as identity, as the DBB paper does
            self.seq_1x1.weight.set_value(paddle.eye(in_channels).reshape([in_channels, in_channels, 1, 1]))

    @classmethod
    def unsupported(cls, conv: Any) -> str | None:
        return "DBB supports groups=1 only" if conv._groups != 1 else None

    def forward(self, x: Any) -> Any:
        y = self.dense(x) + self.one(x)
        y = y + self.seq_bn(self.seq_kxk(self.seq_pad(self.seq_1x1(x))))
        return y + self.avg_bn(self.avg_pool(self.avg_pad(self.avg_1x1(x))))

    @staticmethod
    def _chain(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """1x1 conv (w1, b1) followed by a KxK conv w2 (no bias) as one KxK conv."""
        w = np.tensordot(w2, w1[:, :, 0, 0], axes=([1], [0])).transpose(0, 3, 1, 2)  # [o, h, w, i] -> [o, i, h, w]
        return w, np.tensordot(w2.sum(axis=(2, 3)), b1, axes=([1], [0]))

    def merged_kernel(self) -> tuple[np.ndarray, np.ndarray]:
        k = self.kernel_size
        w, b = super().merged_kernel()
        w1, b1 = _fuse(_w(self.one[0].weight), self.one[1])
        w, b = w + _pad_to(w1, k), b + b1
        s1, t1 = bn_scale_shift(self.seq_pad.bn)
        ws, bs = self._chain(_w(self.seq_1x1.weight) * s1.reshape(-1, 1, 1, 1), t1, _w(self.seq_kxk.weight))
        ws, bs = _fuse(ws, self.seq_bn, bs)
        sa, ta = bn_scale_shift(self.avg_pad.bn)
        avg = np.zeros((self.out_channels, self.out_channels, k, k))
        for c in range(self.out_channels):
            avg[c, c] = 1.0 / (k * k)
        wa, ba = self._chain(_w(self.avg_1x1.weight) * sa.reshape(-1, 1, 1, 1), ta, avg)
        wa, ba = _fuse(wa, self.avg_bn, ba)
        return w + ws + wa, b + bs + ba


def _why_not(conv: Any, config: RepConfig, cls: type[RepBlock]) -> str | None:
    if type(conv) is not nn.Conv2D:
        return f"{type(conv).__name__} is not a plain Conv2D"
    k = list(conv._kernel_size)
    if k[0] != k[1] or k[0] not in config.kernel_sizes:
        return f"kernel {k} is not one of {list(config.kernel_sizes)}"
    if list(conv._dilation) != [1, 1]:
        return "dilated"
    if conv._data_format != "NCHW" or conv._padding_mode != "zeros":
        return "only NCHW with zero padding"
    pad = conv._updated_padding if hasattr(conv, "_updated_padding") else conv._padding
    pads = [pad] * 4 if isinstance(pad, int) else list(np.ravel(pad))
    if conv._padding_algorithm != "EXPLICIT" or len(set(int(p) for p in pads)) != 1 or int(pads[0]) != k[0] // 2:
        return f"padding {conv._padding} is not 'same' ({k[0] // 2})"
    s = list(conv._stride)
    if s[0] != s[1]:
        return f"unequal strides {s}"
    return cls.unsupported(conv)


def reparameterize(model: Any, config: RepConfig | None = None, input_spec: InputSpecLike = None) -> Any:
    """A copy of ``model`` whose plain conv+BN pairs are training-time multi-branch blocks.

    Args:
        model: a ``paddle.nn.Layer`` (unchanged).
        config: which block and which convs (default ``RepConfig()``: RepVGG on 3x3 convs).
        input_spec: input shape(s), used to trace the model and find conv -> BN pairs.

    Returns:
        The new Layer (training-time form). :func:`rep_blocks` lists the blocks.

    Raises:
        ConfigError: bad config or input spec, or no conv in the model can be replaced (reasons listed).
        ExportError: the model cannot be traced.

    Example:
        >>> net = reparameterize(net, RepConfig(block="repvgg"), [None, 3, 32, 32])   # doctest: +SKIP
    """
    config = config or RepConfig()
    if not isinstance(config, RepConfig):
        raise ConfigError(f"config must be a RepConfig, got {type(config).__name__}")
    cls = REP_BLOCKS.get(config.block)
    pairs = find_linear_bn_pairs(model, input_spec)
    twin = copy.deepcopy(model)
    reasons: dict[str, str] = {}
    done = 0
    for pair in pairs:
        conv, bn = get_sublayer(twin, pair.linear), get_sublayer(twin, pair.bn)
        why = "skipped by config" if pair.linear in config.skip else (_why_not(conv, config, cls) if isinstance(conv, nn.Layer) else "")
        if why:
            reasons[pair.linear] = why
            continue
        block = cls(conv._in_channels, conv._out_channels, conv._kernel_size[0], conv._stride[0], conv._kernel_size[0] // 2, conv._groups)
        if config.init == "preserve":
            block.preserve(conv, bn)
        set_sublayer(twin, pair.linear, block)
        set_sublayer(twin, pair.bn, nn.Identity())
        done += 1
    if done == 0:
        detail = "; ".join(f"{k}: {v}" for k, v in list(reasons.items())[:8]) or "no conv followed by a BatchNorm was found"
        raise ConfigError(f"reparameterize({config.block}) found nothing to replace in {type(model).__name__}: {detail}")
    if not model.training:
        twin.eval()
    return twin


def rep_blocks(model: Any) -> dict[str, RepBlock]:
    """Every :class:`RepBlock` in ``model`` by sublayer path."""
    return {name: sub for name, sub in model.named_sublayers() if isinstance(sub, RepBlock)}


@in_place(values=False)
def merge_(model: Any) -> int:
    """Replace every :class:`RepBlock` in ``model`` with its single equivalent conv, in place.

    Returns:
        The number of blocks merged.
    """
    blocks = rep_blocks(model)
    for path, block in blocks.items():
        conv = block.to_conv()
        conv.training = model.training
        set_sublayer(model, path, conv)
    return len(blocks)


def merge(model: Any) -> Any:
    """A copy of ``model`` with every re-parameterization block collapsed into one ``Conv2D`` (eval mode).

    Example:
        >>> deploy = merge(trained)                         # doctest: +SKIP
        >>> slim_deploy.export(deploy, "out/rep", [None, 3, 224, 224])   # doctest: +SKIP
    """
    twin = copy.deepcopy(model)
    twin.eval()
    merge_(twin)
    return twin
