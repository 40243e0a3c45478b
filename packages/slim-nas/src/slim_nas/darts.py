"""DARTS: differentiable search of a cell, first-order approximation.

A cell takes one input (state 0) and computes ``n_nodes`` intermediate states;
state ``j`` is the sum over every earlier state ``i`` of a *mixed operation*
on the edge ``i -> j``: the softmax(alpha)-weighted sum of all candidate
operations. The cell output is a 1x1 conv over the concatenated intermediate
states. All cells of the network share one set of architecture parameters
(alpha), kept apart from the weights: ``net.parameters()`` holds only weights,
``net.arch_parameters()`` only alpha. Search alternates an alpha step on a
validation batch and a weight step on a training batch (the first-order
approximation: the weights are not unrolled). The discrete cell keeps, for
every node, the two strongest incoming edges and on each its strongest
operation other than ``"none"``.

Example:
    >>> result = darts_search(train_batches, val_batches, DartsConfig(steps=50))   # doctest: +SKIP
    >>> result.genotype                                                           # doctest: +SKIP
    [[('sepconv3x3', 0)], [('skip', 0), ('conv3x3', 1)], ...]
    >>> net = DartsNetwork(result.genotype, in_channels=1, num_classes=10)        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from slim_core import ConfigError, Registry, SlimConfig, check_range, progress
from slim_nas._data import cycle as _cycle

__all__ = [
    "OPS",
    "DartsConfig",
    "DartsSupernet",
    "DartsNetwork",
    "DartsResult",
    "darts_search",
    "derive_genotype",
    "check_genotype",
    "Genotype",
]

Genotype = list[list[tuple[str, int]]]
OPS = Registry("DARTS operation")


class _Zero(nn.Layer):
    def forward(self, x: Any) -> Any:
        return x * 0.0


def _relu_conv_bn(c: int, k: int, dilation: int = 1, separable: bool = False) -> nn.Layer:
    pad = dilation * (k // 2)
    if separable:
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2D(c, c, k, padding=pad, dilation=dilation, groups=c, bias_attr=False),
            nn.Conv2D(c, c, 1, bias_attr=False),
            nn.BatchNorm2D(c),
        )
    return nn.Sequential(nn.ReLU(), nn.Conv2D(c, c, k, padding=pad, dilation=dilation, bias_attr=False), nn.BatchNorm2D(c))


OPS.register("none")(lambda c: _Zero())
OPS.register("skip")(lambda c: nn.Identity())
OPS.register("conv3x3")(lambda c: _relu_conv_bn(c, 3))
OPS.register("sepconv3x3")(lambda c: _relu_conv_bn(c, 3, separable=True))
OPS.register("dilconv3x3")(lambda c: _relu_conv_bn(c, 3, dilation=2, separable=True))
OPS.register("maxpool3x3")(lambda c: nn.MaxPool2D(3, stride=1, padding=1))
OPS.register("avgpool3x3")(lambda c: nn.AvgPool2D(3, stride=1, padding=1, exclusive=False))


@dataclass(frozen=True)
class DartsConfig(SlimConfig):
    """DARTS search settings.

    Attributes:
        ops: candidate operations (names in ``OPS``); ``"none"`` lets an edge vanish.
        n_nodes: intermediate nodes per cell.
        n_cells: cells in the search network; channels double after each of ``reduce_after``.
        channels: channels of the first cell.
        steps: search steps (each one alpha step and one weight step).
        weight_lr, arch_lr, arch_weight_decay: optimizers (SGD-momentum for weights, Adam for alpha).
        edges_per_node: incoming edges kept per node when deriving the cell.
        seed: initialisation seed.
    """

    ops: tuple[str, ...] = ("none", "skip", "conv3x3", "sepconv3x3", "dilconv3x3", "maxpool3x3", "avgpool3x3")
    n_nodes: int = 3
    n_cells: int = 2
    channels: int = 16
    reduce_after: tuple[int, ...] = ()
    steps: int = 100
    weight_lr: float = 0.025
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    edges_per_node: int = 2
    seed: int = 0

    def validate(self) -> None:
        if not self.ops:
            raise ConfigError("DartsConfig.ops is empty")
        for op in self.ops:
            OPS.get(op)
        if len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"DartsConfig.ops has duplicates: {list(self.ops)}")
        if [o for o in self.ops if o != "none"] == []:
            raise ConfigError("DartsConfig.ops needs at least one operation besides 'none'")
        for name in ("n_nodes", "n_cells", "channels", "steps", "edges_per_node"):
            check_range(f"DartsConfig.{name}", getattr(self, name), 1)
        for name in ("weight_lr", "arch_lr"):
            check_range(f"DartsConfig.{name}", getattr(self, name), 0, lo_open=True)
        bad = [r for r in self.reduce_after if not 0 <= r < self.n_cells]
        if bad:
            raise ConfigError(f"DartsConfig.reduce_after holds {bad}: cell indices must be in [0, {self.n_cells})")


def _n_edges(n_nodes: int) -> int:
    return sum(j + 1 for j in range(n_nodes))


class _MixedOp(nn.Layer):
    def __init__(self, c: int, ops: Sequence[str]):
        super().__init__()
        self.ops = nn.LayerList([OPS.get(o)(c) for o in ops])

    def forward(self, x: Any, weights: Any) -> Any:
        return sum(weights[i] * op(x) for i, op in enumerate(self.ops))


class _SearchCell(nn.Layer):
    def __init__(self, c: int, n_nodes: int, ops: Sequence[str]):
        super().__init__()
        self.n_nodes = n_nodes
        self.edges = nn.LayerList([_MixedOp(c, ops) for _ in range(_n_edges(n_nodes))])
        self.out = nn.Sequential(nn.Conv2D(c * n_nodes, c, 1, bias_attr=False), nn.BatchNorm2D(c))

    def forward(self, x: Any, weights: Any) -> Any:
        states, e = [x], 0
        for _ in range(self.n_nodes):
            s = 0
            for h in states:
                s = s + self.edges[e](h, weights[e])
                e += 1
            states.append(s)
        return self.out(paddle.concat(states[1:], axis=1))


class _FixedCell(nn.Layer):
    def __init__(self, c: int, genotype: Genotype):
        super().__init__()
        self.genotype = genotype
        self.ops = nn.LayerList([nn.LayerList([OPS.get(op)(c) for op, _ in node]) for node in genotype])
        self.out = nn.Sequential(nn.Conv2D(c * len(genotype), c, 1, bias_attr=False), nn.BatchNorm2D(c))

    def forward(self, x: Any) -> Any:
        states = [x]
        for node, ops in zip(self.genotype, self.ops):
            states.append(sum(op(states[i]) for (_, i), op in zip(node, ops)))
        return self.out(paddle.concat(states[1:], axis=1))


class _CellNet(nn.Layer):
    """Stem, cells (with a strided 1x1 conv that doubles channels after each reduction index), pool, classifier."""

    def __init__(
        self,
        make_cell: Callable[[int], nn.Layer],
        in_channels: int,
        num_classes: int,
        channels: int,
        n_cells: int,
        reduce_after: Sequence[int],
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(in_channels, channels, 3, padding=1, bias_attr=False), nn.BatchNorm2D(channels))
        cells, reduces, c = [], [], channels
        for i in range(n_cells):
            cells.append(make_cell(c))
            if i in reduce_after:
                reduces.append(nn.Sequential(nn.ReLU(), nn.Conv2D(c, 2 * c, 1, stride=2, bias_attr=False), nn.BatchNorm2D(2 * c)))
                c *= 2
            else:
                reduces.append(nn.Identity())
        self.cells, self.reduces = nn.LayerList(cells), nn.LayerList(reduces)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.classifier = nn.Linear(c, num_classes)

    def _body(self, x: Any, cell_fn: Callable[[nn.Layer, Any], Any]) -> Any:
        x = self.stem(x)
        for cell, red in zip(self.cells, self.reduces):
            x = red(cell_fn(cell, x))
        return self.classifier(paddle.flatten(self.pool(x), 1))


class DartsSupernet(_CellNet):
    """The search network: cells of mixed operations sharing architecture parameters alpha.

    ``parameters()`` returns the weights only; ``arch_parameters()`` returns alpha.
    """

    def __init__(self, config: DartsConfig | None = None, *, in_channels: int = 3, num_classes: int = 10):
        cfg = config or DartsConfig()
        super().__init__(
            lambda c: _SearchCell(c, cfg.n_nodes, cfg.ops), in_channels, num_classes, cfg.channels, cfg.n_cells, cfg.reduce_after
        )
        self.config = cfg
        alpha = paddle.create_parameter(
            [_n_edges(cfg.n_nodes), len(cfg.ops)], "float32", default_initializer=nn.initializer.Normal(0.0, 1e-3)
        )
        self._arch = [alpha]  # a plain list, so the Layer does not register alpha among its weights

    def arch_parameters(self) -> list[Any]:
        return list(self._arch)

    def forward(self, x: Any) -> Any:
        weights = F.softmax(self._arch[0], axis=-1)
        return self._body(x, lambda cell, h: cell(h, weights))

    def genotype(self) -> Genotype:
        """The discrete cell of the current alpha (see :func:`derive_genotype`)."""
        return derive_genotype(self._arch[0].numpy(), self.config.ops, self.config.n_nodes, self.config.edges_per_node)


class DartsNetwork(_CellNet):
    """A plain network of discrete cells built from a genotype; trains and exports like any Layer."""

    def __init__(
        self,
        genotype: Genotype,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 16,
        n_cells: int = 2,
        reduce_after: Sequence[int] = (),
    ):
        check_genotype(genotype)
        super().__init__(lambda c: _FixedCell(c, genotype), in_channels, num_classes, channels, n_cells, reduce_after)
        self.genotype = genotype

    def forward(self, x: Any) -> Any:
        return self._body(x, lambda cell, h: cell(h))


def derive_genotype(alpha: np.ndarray, ops: Sequence[str], n_nodes: int, edges_per_node: int = 2) -> Genotype:
    """The discrete cell: per node the strongest ``edges_per_node`` inputs, each with its best non-``none`` op."""
    alpha = np.asarray(alpha, dtype="float64")
    if alpha.shape != (_n_edges(n_nodes), len(ops)):
        raise ConfigError(f"alpha has shape {alpha.shape}, expected {(_n_edges(n_nodes), len(ops))} for {n_nodes} nodes and {len(ops)} ops")
    w = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    usable = [i for i, o in enumerate(ops) if o != "none"]
    genotype: Genotype = []
    e = 0
    for j in range(n_nodes):
        cands = []
        for i in range(j + 1):
            best = max(usable, key=lambda k: w[e, k])
            cands.append((float(w[e, best]), ops[best], i))
            e += 1
        cands.sort(key=lambda t: -t[0])
        genotype.append(sorted(((op, i) for _, op, i in cands[:edges_per_node]), key=lambda t: t[1]))
    return genotype


def check_genotype(genotype: Any) -> Genotype:
    """Raise ConfigError unless ``genotype`` is a valid cell: per node, (known op, earlier state index) pairs."""
    if not isinstance(genotype, (list, tuple)) or not genotype:
        raise ConfigError(f"a genotype is a non-empty list of nodes, got {genotype!r}")
    for j, node in enumerate(genotype):
        if not isinstance(node, (list, tuple)) or not node:
            raise ConfigError(f"genotype node {j} must be a non-empty list of (op, input) pairs, got {node!r}")
        for pair in node:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(f"genotype node {j}: expected (op, input) pairs, got {pair!r}")
            op, i = pair
            OPS.get(op)
            if op == "none":
                raise ConfigError(f"genotype node {j} uses 'none', which a derived cell never keeps")
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= j:
                raise ConfigError(f"genotype node {j}: input {i!r} must be an earlier state index in [0, {j}]")
    return [[(op, int(i)) for op, i in node] for node in genotype]


@dataclass
class DartsResult:
    """What a DARTS search found: the discrete cell, alpha (softmaxed) and the loss history."""

    genotype: Genotype
    alpha: np.ndarray
    ops: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    supernet: Any = field(default=None, repr=False)


def darts_search(
    train_data: Any, val_data: Any, config: DartsConfig | None = None, *, in_channels: int | None = None, num_classes: int = 10
) -> DartsResult:
    """Search a cell with first-order DARTS.

    Args:
        train_data: re-iterable ``(inputs, labels)`` batches for the weights.
        val_data: re-iterable ``(inputs, labels)`` batches for alpha.
        config: a :class:`DartsConfig`.
        in_channels: input channels (read from the first batch when None).
        num_classes: classifier outputs.

    Returns:
        A :class:`DartsResult` whose ``genotype`` builds a :class:`DartsNetwork`.
    """
    cfg = config or DartsConfig()
    paddle.seed(cfg.seed)
    train_it, val_it = _cycle(train_data), _cycle(val_data)
    first = next(train_it)
    net = DartsSupernet(cfg, in_channels=in_channels or int(first[0].shape[1]), num_classes=num_classes)
    w_opt = paddle.optimizer.Momentum(learning_rate=cfg.weight_lr, momentum=0.9, parameters=net.parameters(), weight_decay=3e-4)
    a_opt = paddle.optimizer.Adam(
        learning_rate=cfg.arch_lr, beta1=0.5, beta2=0.999, parameters=net.arch_parameters(), weight_decay=cfg.arch_weight_decay
    )
    history = []
    net.train()
    batch = first
    for step in progress(range(cfg.steps), desc="darts"):
        xv, yv = next(val_it)
        val_loss = F.cross_entropy(net(xv), yv)
        val_loss.backward()
        a_opt.step()
        a_opt.clear_grad()
        w_opt.clear_grad()  # the alpha step must not move the weights
        x, y = batch if step == 0 else next(train_it)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        w_opt.step()
        w_opt.clear_grad()
        a_opt.clear_grad()
        history.append({"train_loss": float(loss), "val_loss": float(val_loss)})
    alpha = F.softmax(net.arch_parameters()[0], axis=-1).numpy()
    return DartsResult(net.genotype(), alpha, tuple(cfg.ops), history, net)
