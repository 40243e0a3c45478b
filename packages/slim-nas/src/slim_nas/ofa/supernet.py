"""Supernets built from super layers: MobileNetV2-style and ResNet-style, with their search spaces.

A :class:`Supernet` is a Layer whose elastic dimensions are named by a
:class:`~slim_nas.SearchSpace`. ``set_config`` activates one subnet (all
forward passes then run it by slicing the shared weights) and ``export``
builds that subnet as a plain Paddle Layer (``nn.Conv2D``, ``nn.BatchNorm2D``,
``nn.Linear``) holding copies of the sliced weights.

Keys of the shipped spaces, per stage ``i``: ``stage{i}.depth`` (blocks run),
``stage{i}.width`` (multiplier of the stage's output channels), ``stage{i}.expand``
(MobileNetV2: expansion ratio of the inverted residuals; ResNet: ratio of the
blocks' middle channels) and ``stage{i}.kernel`` (kernel size of the depthwise /
3x3 convs).

Example:
    >>> net = OFAMobileNetV2(num_classes=10, in_channels=1, input_size=8)   # doctest: +SKIP
    >>> sub = net.export(net.space().smallest())                             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import paddle
from paddle import nn

from slim_core import ConfigError
from slim_nas.ofa.layers import SuperBatchNorm2D, SuperConv2D, SuperLinear
from slim_nas.space import Choice, SearchSpace

__all__ = [
    "Supernet",
    "OFAMobileNetV2",
    "OFAResNet",
    "mobilenetv2_space",
    "resnet_space",
    "InvertedResidual",
    "BasicBlock",
    "SubnetModel",
    "make_divisible",
    "uniform_config",
]

Stage = tuple[int, int, int]  # (max output channels, max depth, stride)


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round channels to a multiple of ``divisor`` (never below ``divisor``, never 10% under ``value``)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _check_stages(stages: Sequence[Sequence[int]]) -> list[Stage]:
    out = []
    if not stages:
        raise ConfigError("a supernet needs at least one stage (channels, max_depth, stride)")
    for i, st in enumerate(stages):
        if len(st) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in st):
            raise ConfigError(f"stage {i} must be (channels, max_depth, stride) of positive integers, got {st!r}")
        out.append((int(st[0]), int(st[1]), int(st[2])))
    return out


def _depths(depth_choices: Sequence[int] | None, max_depth: int) -> Choice:
    ds = sorted({d for d in (depth_choices or range(1, max_depth + 1)) if 1 <= d <= max_depth}) or [max_depth]
    return Choice(ds)


def _stage_space(stages: list[Stage], keys: Mapping[str, Sequence[Any]], depth_choices: Sequence[int] | None) -> SearchSpace:
    domains: dict[str, Any] = {}
    for i, (_, depth, _) in enumerate(stages):
        domains[f"stage{i}.depth"] = _depths(depth_choices, depth)
        for key, values in keys.items():
            domains[f"stage{i}.{key}"] = Choice(sorted(values))
    return SearchSpace(domains)


def mobilenetv2_space(
    stages: Sequence[Sequence[int]] = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 2, 2)),
    *,
    kernel_choices: Sequence[int] = (3, 5, 7),
    expand_choices: Sequence[float] = (3, 4, 6),
    width_choices: Sequence[float] = (0.75, 1.0),
    depth_choices: Sequence[int] | None = None,
) -> SearchSpace:
    """The MobileNetV2-style space: per stage depth, width, expand ratio and depthwise kernel size."""
    return _stage_space(_check_stages(stages), {"width": width_choices, "expand": expand_choices, "kernel": kernel_choices}, depth_choices)


def resnet_space(
    stages: Sequence[Sequence[int]] = ((16, 2, 1), (32, 2, 2), (64, 2, 2)),
    *,
    kernel_choices: Sequence[int] = (3,),
    expand_choices: Sequence[float] = (0.5, 0.75, 1.0),
    width_choices: Sequence[float] = (0.5, 0.75, 1.0),
    depth_choices: Sequence[int] | None = None,
) -> SearchSpace:
    """The ResNet-style space (basic blocks): per stage depth, width, middle-channel ratio and kernel size."""
    return _stage_space(_check_stages(stages), {"width": width_choices, "expand": expand_choices, "kernel": kernel_choices}, depth_choices)


# ---------------------------------------------------------------------------------------------- plain subnet layers
class InvertedResidual(nn.Layer):
    """MobileNetV2 block of plain layers: 1x1 expand, depthwise kxk, 1x1 project (+ identity)."""

    def __init__(self, expand: nn.Layer, depthwise: nn.Layer, project: nn.Layer, residual: bool):
        super().__init__()
        self.expand, self.depthwise, self.project, self.residual = expand, depthwise, project, residual

    def forward(self, x: Any) -> Any:
        h = self.project(self.depthwise(self.expand(x)))
        return x + h if self.residual else h


class BasicBlock(nn.Layer):
    """ResNet basic block of plain layers: two kxk convs, identity or 1x1 projection shortcut."""

    def __init__(self, body: nn.Layer, shortcut: nn.Layer | None):
        super().__init__()
        self.body, self.shortcut = body, shortcut
        self.relu = nn.ReLU()

    def forward(self, x: Any) -> Any:
        return self.relu(self.body(x) + (self.shortcut(x) if self.shortcut is not None else x))


class SubnetModel(nn.Layer):
    """An exported subnet: stem, blocks, head, pooling and classifier, all plain Paddle layers."""

    def __init__(self, stem: nn.Layer, blocks: Sequence[nn.Layer], head: nn.Layer, classifier: nn.Layer, config: dict[str, Any]):
        super().__init__()
        self.stem, self.blocks, self.head, self.classifier = stem, nn.LayerList(list(blocks)), head, classifier
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.config = dict(config)

    def forward(self, x: Any) -> Any:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.pool(self.head(x))
        return self.classifier(paddle.flatten(x, 1))


# ---------------------------------------------------------------------------------------------- supernets
class Supernet(nn.Layer):
    """Base of supernets: a Layer, a search space over its elastic dimensions and an export.

    Subclasses set ``self.input_shape`` (one example input, batch 1), implement
    :meth:`space`, :meth:`_apply` (activate a checked config) and :meth:`_plain`
    (build the plain Layer of the active subnet after a forward pass).
    """

    input_shape: list[int]

    def space(self) -> SearchSpace:
        raise NotImplementedError

    def _apply(self, config: dict[str, Any]) -> None:
        raise NotImplementedError

    def _plain(self) -> nn.Layer:
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """The active subnet config."""
        return dict(self._config)

    def set_config(self, config: Mapping[str, Any]) -> None:
        """Activate the subnet ``config`` (checked against :meth:`space`)."""
        checked = self.space().check(config)
        self._apply(checked)
        self._config = checked

    def largest(self) -> dict[str, Any]:
        return self.space().largest()

    def smallest(self) -> dict[str, Any]:
        return self.space().smallest()

    def export(self, config: Mapping[str, Any] | None = None) -> nn.Layer:
        """Build the subnet ``config`` (default: the active one) as a plain Layer with copied weights.

        The result holds only ``nn.Conv2D`` / ``nn.BatchNorm2D`` / ``nn.Linear`` /
        activations, runs, trains and saves with ``paddle.jit.save`` like any model.
        It is returned in eval mode; the supernet's active config is restored.
        """
        previous = self.config
        was_training = self.training
        try:
            self.set_config(dict(config) if config is not None else previous)
            self.eval()
            with paddle.no_grad():
                self(paddle.zeros(self.input_shape, dtype="float32"))
                plain = self._plain()
        finally:
            self.set_config(previous)
            if was_training:
                self.train()
        if isinstance(plain, SubnetModel):
            plain.config = dict(config) if config is not None else previous
        plain.eval()
        return plain


class _SuperInvertedResidual(nn.Layer):
    def __init__(self, cin: int, cout: int, stride: int, expand_max: float, kernel_max: int, residual: bool):
        super().__init__()
        hidden = make_divisible(cin * expand_max, 1)
        self.expand_conv, self.expand_bn = SuperConv2D(cin, hidden, 1), SuperBatchNorm2D(hidden)
        self.dw_conv, self.dw_bn = SuperConv2D(hidden, hidden, kernel_max, stride, depthwise=True), SuperBatchNorm2D(hidden)
        self.project_conv, self.project_bn = SuperConv2D(hidden, cout, 1), SuperBatchNorm2D(cout)
        self.act = nn.ReLU6()
        self.residual = residual
        self.expand_ratio = expand_max

    def forward(self, x: Any) -> Any:
        self.expand_conv.active_out = max(1, int(round(int(x.shape[1]) * self.expand_ratio)))
        h = self.act(self.expand_bn(self.expand_conv(x)))
        h = self.act(self.dw_bn(self.dw_conv(h)))
        h = self.project_bn(self.project_conv(h))
        return x + h if self.residual else h

    def to_static(self) -> InvertedResidual:
        return InvertedResidual(
            nn.Sequential(self.expand_conv.to_static(), self.expand_bn.to_static(), nn.ReLU6()),
            nn.Sequential(self.dw_conv.to_static(), self.dw_bn.to_static(), nn.ReLU6()),
            nn.Sequential(self.project_conv.to_static(), self.project_bn.to_static()),
            self.residual,
        )


class _SuperBasicBlock(nn.Layer):
    def __init__(self, cin: int, cout: int, stride: int, kernel_max: int, first: bool):
        super().__init__()
        self.conv1, self.bn1 = SuperConv2D(cin, cout, kernel_max, stride), SuperBatchNorm2D(cout)
        self.conv2, self.bn2 = SuperConv2D(cout, cout, kernel_max), SuperBatchNorm2D(cout)
        # the first block of a stage always projects: elastic widths make its in and out widths differ
        self.sc_conv = SuperConv2D(cin, cout, 1, stride) if first else None
        self.sc_bn = SuperBatchNorm2D(cout) if first else None
        self.relu = nn.ReLU()
        self.out_channels = cout
        self.expand_ratio = 1.0

    def set_out(self, cout: int, expand: float, kernel: int) -> None:
        self.conv1.active_out = max(1, int(round(cout * expand)))
        self.conv2.active_out = cout
        self.conv1.active_kernel = self.conv2.active_kernel = kernel
        if self.sc_conv is not None:
            self.sc_conv.active_out = cout

    def forward(self, x: Any) -> Any:
        h = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        sc = self.sc_bn(self.sc_conv(x)) if self.sc_conv is not None else x
        return self.relu(h + sc)

    def to_static(self) -> BasicBlock:
        body = nn.Sequential(self.conv1.to_static(), self.bn1.to_static(), nn.ReLU(), self.conv2.to_static(), self.bn2.to_static())
        sc = nn.Sequential(self.sc_conv.to_static(), self.sc_bn.to_static()) if self.sc_conv is not None else None
        return BasicBlock(body, sc)


class _StagedSupernet(Supernet):
    """Shared skeleton: stem conv, stages of blocks (elastic depth), head conv, pooling, linear classifier.

    Subclasses pass their space and a block factory and implement :meth:`_apply_block`.
    """

    def __init__(
        self,
        space: SearchSpace,
        stages: list[Stage],
        make_block: Callable[[int, int, int, int], nn.Layer],
        *,
        num_classes: int,
        in_channels: int,
        input_size: int,
        stem_channels: int,
        head_channels: int,
        act: type,
    ):
        super().__init__()
        if min(input_size, in_channels, num_classes, stem_channels, head_channels) < 1:
            raise ConfigError(
                "num_classes, in_channels, input_size, stem_channels and head_channels must be positive, "
                f"got {num_classes}, {in_channels}, {input_size}, {stem_channels}, {head_channels}"
            )
        self._space, self.stages_spec = space, stages
        self.input_shape = [1, in_channels, input_size, input_size]
        self.stem_conv, self.stem_bn, self.act = SuperConv2D(in_channels, stem_channels, 3), SuperBatchNorm2D(stem_channels), act()
        stages_ll, cin = [], stem_channels
        for c, n, s in stages:
            stages_ll.append(nn.LayerList([make_block(cin if j == 0 else c, c, s if j == 0 else 1, j) for j in range(n)]))
            cin = c
        self.stages = nn.LayerList(stages_ll)
        self.head_conv, self.head_bn = SuperConv2D(stages[-1][0], head_channels, 1), SuperBatchNorm2D(head_channels)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.classifier = SuperLinear(head_channels, num_classes)
        self.act_type = act
        self.depth = [n for _, n, _ in stages]
        self.set_config(space.largest())

    def space(self) -> SearchSpace:
        return self._space

    def _apply(self, config: dict[str, Any]) -> None:
        for i, ((c, _, _), stage) in enumerate(zip(self.stages_spec, self.stages)):
            self.depth[i] = config[f"stage{i}.depth"]
            cout = min(c, make_divisible(c * config[f"stage{i}.width"]))
            for block in stage:
                self._apply_block(block, cout, config[f"stage{i}.expand"], config[f"stage{i}.kernel"])

    def _apply_block(self, block: nn.Layer, cout: int, expand: float, kernel: int) -> None:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        x = self.act(self.stem_bn(self.stem_conv(x)))
        for stage, depth in zip(self.stages, self.depth):
            for block in list(stage)[:depth]:
                x = block(x)
        x = self.pool(self.act(self.head_bn(self.head_conv(x))))
        return self.classifier(paddle.flatten(x, 1))

    def _plain(self) -> nn.Layer:
        stem = nn.Sequential(self.stem_conv.to_static(), self.stem_bn.to_static(), self.act_type())
        blocks = [block.to_static() for stage, depth in zip(self.stages, self.depth) for block in list(stage)[:depth]]
        head = nn.Sequential(self.head_conv.to_static(), self.head_bn.to_static(), self.act_type())
        return SubnetModel(stem, blocks, head, self.classifier.to_static(), self.config)


class OFAMobileNetV2(_StagedSupernet):
    """A MobileNetV2-style supernet of inverted residual blocks with elastic depth, width, expand ratio and kernel.

    The first block of each stage changes stride and width; the others are residual.

    Args:
        num_classes: classifier outputs.
        in_channels: input image channels.
        input_size: input height and width (used for the example input of :meth:`export`).
        stages: ``(max output channels, max depth, stride)`` per stage.
        stem_channels, head_channels: fixed widths of the stem and the last 1x1 conv.
        kernel_choices, expand_choices, width_choices, depth_choices: the elastic choices.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        stages: Sequence[Sequence[int]] = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 2, 2)),
        *,
        stem_channels: int = 16,
        head_channels: int = 128,
        kernel_choices: Sequence[int] = (3, 5, 7),
        expand_choices: Sequence[float] = (3, 4, 6),
        width_choices: Sequence[float] = (0.75, 1.0),
        depth_choices: Sequence[int] | None = None,
    ):
        spec = _check_stages(stages)
        space = mobilenetv2_space(
            spec, kernel_choices=kernel_choices, expand_choices=expand_choices, width_choices=width_choices, depth_choices=depth_choices
        )
        e_max, k_max = max(expand_choices), max(kernel_choices)
        super().__init__(
            space,
            spec,
            lambda cin, cout, stride, j: _SuperInvertedResidual(cin, cout, stride, e_max, k_max, residual=j > 0),
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            stem_channels=stem_channels,
            head_channels=head_channels,
            act=nn.ReLU6,
        )

    def _apply_block(self, block: nn.Layer, cout: int, expand: float, kernel: int) -> None:
        block.expand_ratio = expand
        block.dw_conv.active_kernel = kernel
        block.project_conv.active_out = cout


class OFAResNet(_StagedSupernet):
    """A ResNet-style supernet of basic blocks with elastic depth, width, middle-channel ratio and kernel.

    Args: as :class:`OFAMobileNetV2` (``expand_choices`` are ratios of a block's middle channels).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        stages: Sequence[Sequence[int]] = ((16, 2, 1), (32, 2, 2), (64, 2, 2)),
        *,
        stem_channels: int = 16,
        head_channels: int = 128,
        kernel_choices: Sequence[int] = (3,),
        expand_choices: Sequence[float] = (0.5, 0.75, 1.0),
        width_choices: Sequence[float] = (0.5, 0.75, 1.0),
        depth_choices: Sequence[int] | None = None,
    ):
        spec = _check_stages(stages)
        space = resnet_space(
            spec, kernel_choices=kernel_choices, expand_choices=expand_choices, width_choices=width_choices, depth_choices=depth_choices
        )
        k_max = max(kernel_choices)
        super().__init__(
            space,
            spec,
            lambda cin, cout, stride, j: _SuperBasicBlock(cin, cout, stride, k_max, first=j == 0),
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            stem_channels=stem_channels,
            head_channels=head_channels,
            act=nn.ReLU,
        )

    def _apply_block(self, block: nn.Layer, cout: int, expand: float, kernel: int) -> None:
        block.set_out(cout, expand, kernel)


def uniform_config(space: SearchSpace, fraction: float) -> dict[str, Any]:
    """The config that puts every parameter at the same relative position (0 = smallest, 1 = largest)."""
    out = {}
    for name, dom in space.domains.items():
        vals = sorted(dom.values()) if dom.values() is not None else None
        if vals is None:
            out[name] = dom.minimum() + fraction * (dom.maximum() - dom.minimum())
        else:
            out[name] = vals[int(round(fraction * (len(vals) - 1)))]
    return out
