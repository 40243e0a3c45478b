"""Tiny PaddleClas-style backbones for the INT8 export zoo (random init, 3x32x32 input, 10 classes).

Each is written the way PaddleClas writes the original: SE blocks with ``paddle.multiply``, attention
with ``reshape`` + ``paddle.matmul``, ``F.hardswish``/``F.hardsigmoid``/``F.sigmoid``/``F.gelu``,
blocks registered through ``add_sublayer("_blocks.N.", ...)`` or held in ``nn.LayerList``, grouped and
depthwise convs, concat/split/channel shuffle. Widths and depths are cut down so a whole zoo run
(PTQ + export + runtime checks) stays within seconds per model.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from slim_core.graph.zoo_nets import Mlp, channel_shuffle  # the graph zoo's, the same PaddleClas code

__all__ = ["ZOO", "build"]


class ConvBNLayer(nn.Layer):
    def __init__(self, cin, cout, k, stride=1, groups=1, act="hardswish"):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.act == "hardswish":
            x = F.hardswish(x)
        elif self.act == "relu":
            x = F.relu(x)
        elif self.act == "swish":
            x = F.swish(x)
        return x


class SEModule(nn.Layer):
    """PP-LCNet / MobileNetV3 squeeze-excitation: ``paddle.multiply(x=identity, y=scale)``."""

    def __init__(self, c, reduction=4, gate="hardsigmoid"):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv1 = nn.Conv2D(c, max(c // reduction, 4), 1)
        self.conv2 = nn.Conv2D(max(c // reduction, 4), c, 1)
        self.gate = gate

    def forward(self, x):
        identity = x
        x = F.relu(self.conv1(self.avg_pool(x)))
        x = self.conv2(x)
        if self.gate == "hardsigmoid":
            x = F.hardsigmoid(x, slope=0.2, offset=0.5)
        elif self.gate == "clip":
            x = paddle.clip(x=x, min=0, max=1)
        else:
            x = F.sigmoid(x)
        return paddle.multiply(x=identity, y=x)


class DepthwiseSeparable(nn.Layer):
    def __init__(self, cin, cout, stride, k=3, use_se=False):
        super().__init__()
        self.dw_conv = ConvBNLayer(cin, cin, k, stride, groups=cin)
        self.se = SEModule(cin) if use_se else None
        self.pw_conv = ConvBNLayer(cin, cout, 1)

    def forward(self, x):
        x = self.dw_conv(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw_conv(x)


class PPLCNet(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNLayer(3, 8, 3, 2)
        self.blocks2 = nn.Sequential(DepthwiseSeparable(8, 16, 1))
        self.blocks3 = nn.Sequential(DepthwiseSeparable(16, 16, 2), DepthwiseSeparable(16, 32, 1, k=5, use_se=True))
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(32, 64, 1, bias_attr=False)
        self.hardswish = nn.Hardswish()
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.blocks3(self.blocks2(self.conv1(x)))
        x = self.hardswish(self.last_conv(self.avg_pool(x)))
        return self.fc(self.flatten(x))


class ResidualUnit(nn.Layer):
    """MobileNetV3 as PaddleClas writes it: expand, depthwise, SE, linear projection, ``paddle.add`` shortcut."""

    def __init__(self, cin, mid, cout, k, stride, use_se, act):
        super().__init__()
        self.if_shortcut = stride == 1 and cin == cout
        self.expand_conv = ConvBNLayer(cin, mid, 1, act=act)
        self.bottleneck_conv = ConvBNLayer(mid, mid, k, stride, groups=mid, act=act)
        self.mid_se = SEModule(mid) if use_se else None
        self.linear_conv = ConvBNLayer(mid, cout, 1, act=None)

    def forward(self, x):
        identity = x
        x = self.bottleneck_conv(self.expand_conv(x))
        if self.mid_se is not None:
            x = self.mid_se(x)
        x = self.linear_conv(x)
        return paddle.add(identity, x) if self.if_shortcut else x


class MobileNetV3(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = ConvBNLayer(3, 8, 3, 2)
        cfg = [(3, 16, 8, True, "relu", 1), (3, 24, 12, False, "relu", 2), (5, 36, 12, True, "hardswish", 1)]
        cin, blocks = 8, []
        for k, mid, cout, se, act, s in cfg:
            blocks.append(ResidualUnit(cin, mid, cout, k, s, se, act))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.last_second_conv = ConvBNLayer(cin, 48, 1)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(48, 64, 1, bias_attr=False)
        self.hardswish = nn.Hardswish()
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.last_second_conv(self.blocks(self.conv(x)))
        x = self.hardswish(self.last_conv(self.avg_pool(x)))
        return self.fc(self.flatten(x))


class GhostModule(nn.Layer):
    def __init__(self, cin, cout, relu=True):
        super().__init__()
        init = cout // 2
        self.primary_conv = ConvBNLayer(cin, init, 1, act="relu" if relu else None)
        self.cheap_operation = ConvBNLayer(init, cout - init, 3, groups=init, act="relu" if relu else None)

    def forward(self, x):
        x = self.primary_conv(x)
        y = self.cheap_operation(x)
        return paddle.concat([x, y], axis=1)


class GhostBottleneck(nn.Layer):
    def __init__(self, cin, mid, cout, stride, use_se):
        super().__init__()
        self.ghost_module_1 = GhostModule(cin, mid)
        self.depthwise_conv = ConvBNLayer(mid, mid, 3, stride, groups=mid, act=None) if stride == 2 else None
        self.se_block = SEModule(mid, gate="clip") if use_se else None
        self.ghost_module_2 = GhostModule(mid, cout, relu=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(ConvBNLayer(cin, cin, 3, stride, groups=cin, act=None), ConvBNLayer(cin, cout, 1, act=None))

    def forward(self, x):
        y = self.ghost_module_1(x)
        if self.depthwise_conv is not None:
            y = self.depthwise_conv(y)
        if self.se_block is not None:
            y = self.se_block(y)
        y = self.ghost_module_2(y)
        return paddle.add(x if self.shortcut is None else self.shortcut(x), y)


class GhostNet(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNLayer(3, 8, 3, 2, act="relu")
        self.ghost_bottleneck_list = nn.LayerList([GhostBottleneck(8, 16, 8, 1, False), GhostBottleneck(8, 24, 16, 2, True)])
        self.conv_last = ConvBNLayer(16, 48, 1, act="relu")
        self.pool2d_gap = nn.AdaptiveAvgPool2D(1)
        self.fc_0 = nn.Conv2D(48, 64, 1)
        self.fc_1 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for block in self.ghost_bottleneck_list:
            x = block(x)
        x = F.relu(self.fc_0(self.pool2d_gap(self.conv_last(x))))
        return self.fc_1(paddle.flatten(x, start_axis=1, stop_axis=-1))


class ESBlock(nn.Layer):
    """ESNet block 1: split, branch with SE, concat, channel shuffle."""

    def __init__(self, c):
        super().__init__()
        half = c // 2
        self.conv_pw = ConvBNLayer(half, half, 1)
        self.conv_dw = ConvBNLayer(half, half, 3, groups=half, act=None)
        self.se = SEModule(half)
        self.conv_linear = ConvBNLayer(half, half, 1)

    def forward(self, x):
        x1, x2 = paddle.split(x, num_or_sections=[x.shape[1] // 2, x.shape[1] // 2], axis=1)
        x2 = self.se(self.conv_dw(self.conv_pw(x2)))
        x2 = self.conv_linear(x2)
        return channel_shuffle(paddle.concat([x1, x2], axis=1), 2)


class ESNet(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNLayer(3, 16, 3, 2)
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.blocks = nn.Sequential(ESBlock(16), ESBlock(16))
        self.conv2 = ConvBNLayer(16, 48, 1)
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.conv2(self.blocks(self.max_pool(self.conv1(x))))
        return self.fc(paddle.flatten(self.avg_pool(x), start_axis=1, stop_axis=-1))


class MbConvBlock(nn.Layer):
    def __init__(self, cin, cout, expand, k, stride):
        super().__init__()
        mid = cin * expand
        self.expand_conv = ConvBNLayer(cin, mid, 1, act="swish") if expand != 1 else None
        self.depthwise_conv = ConvBNLayer(mid, mid, k, stride, groups=mid, act="swish")
        self.se = SEModule(mid, gate="sigmoid")
        self.project_conv = ConvBNLayer(mid, cout, 1, act=None)
        self.id_skip = stride == 1 and cin == cout

    def forward(self, inputs):
        x = self.expand_conv(inputs) if self.expand_conv is not None else inputs
        x = self.project_conv(self.se(self.depthwise_conv(x)))
        return paddle.add(x, inputs) if self.id_skip else x


class EfficientNet(nn.Layer):
    """Blocks registered as PaddleClas's ExtractFeatures does: ``add_sublayer("_blocks." + str(idx) + ".", ...)``."""

    def __init__(self, num_classes=10):
        super().__init__()
        self._conv_stem = ConvBNLayer(3, 8, 3, 2, act="swish")
        self.conv_seq = []
        for idx, (cin, cout, e, k, s) in enumerate([(8, 8, 1, 3, 1), (8, 16, 4, 3, 2), (16, 16, 4, 5, 1)]):
            self.conv_seq.append(self.add_sublayer("_blocks." + str(idx) + ".", MbConvBlock(cin, cout, e, k, s)))
        self._conv_head = ConvBNLayer(16, 48, 1, act="swish")
        self._pool = nn.AdaptiveAvgPool2D(1)
        self._fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self._conv_stem(x)
        for block in self.conv_seq:
            x = block(x)
        x = self._pool(self._conv_head(x))
        return self._fc(paddle.squeeze(x, axis=[2, 3]))


class Attention(nn.Layer):
    """DeiT/ViT attention as PaddleClas writes it (``sr_ratio > 1``: PVT's spatial-reduction attention)."""

    def __init__(self, dim, num_heads=2, sr_ratio=1):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, dim * 2)
            self.sr = nn.Conv2D(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, hw=None):
        n, c = x.shape[1], x.shape[2]
        hd = c // self.num_heads
        if self.sr_ratio > 1:
            q = self.q(x).reshape((-1, n, self.num_heads, hd)).transpose((0, 2, 1, 3))
            x_ = x.transpose([0, 2, 1]).reshape([-1, c, hw[0], hw[1]])
            x_ = self.norm(self.sr(x_).reshape([-1, c, (hw[0] // self.sr_ratio) * (hw[1] // self.sr_ratio)]).transpose([0, 2, 1]))
            kv = self.kv(x_).reshape((-1, x_.shape[1], 2, self.num_heads, hd)).transpose((2, 0, 3, 1, 4))
            k, v = kv[0], kv[1]
        else:
            qkv = self.qkv(x).reshape((-1, n, 3, self.num_heads, hd)).transpose((2, 0, 3, 1, 4))
            q, k, v = qkv[0], qkv[1], qkv[2]
        attn = paddle.matmul(q, k.transpose((0, 1, 3, 2))) * self.scale
        attn = F.softmax(attn, axis=-1)
        x = paddle.matmul(attn, v).transpose((0, 2, 1, 3)).reshape((-1, n, c))
        return self.proj(x)


class Block(nn.Layer):
    def __init__(self, dim, num_heads=2, sr_ratio=1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=1e-6)
        self.attn = Attention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, epsilon=1e-6)
        self.mlp = Mlp(dim, dim * 2)

    def forward(self, x, hw=None):
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x))


class DeiT(nn.Layer):
    def __init__(self, num_classes=10, dim=32, depth=2):
        super().__init__()
        self.patch_embed = nn.Conv2D(3, dim, 4, stride=4)
        self.cls_token = self.create_parameter([1, 1, dim], default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self.pos_embed = self.create_parameter([1, 65, dim], default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self.blocks = nn.LayerList([Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, epsilon=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose((0, 2, 1))
        cls = self.cls_token.expand((x.shape[0], -1, -1))
        x = paddle.concat((cls, x), axis=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


class PVT(nn.Layer):
    """Two PVT stages: overlapping-free patch embed, spatial-reduction attention blocks in LayerLists."""

    def __init__(self, num_classes=10, dims=(16, 32)):
        super().__init__()
        self.patch_embed1 = nn.Conv2D(3, dims[0], 4, stride=4)
        self.patch_embed2 = nn.Conv2D(dims[0], dims[1], 2, stride=2)
        self.block1 = nn.LayerList([Block(dims[0], 1, sr_ratio=2)])
        self.block2 = nn.LayerList([Block(dims[1], 2, sr_ratio=1)])
        self.norm = nn.LayerNorm(dims[1])
        self.head = nn.Linear(dims[1], num_classes)
        self.dims = dims

    def forward(self, x):
        x = self.patch_embed1(x)
        hw = x.shape[2:]
        x = x.flatten(2).transpose((0, 2, 1))
        for blk in self.block1:
            x = blk(x, hw)
        x = x.reshape([-1, hw[0], hw[1], self.dims[0]]).transpose([0, 3, 1, 2])
        x = self.patch_embed2(x).flatten(2).transpose((0, 2, 1))
        for blk in self.block2:
            x = blk(x)
        return self.head(self.norm(x).mean(axis=1))


class InvertedResidual(nn.Layer):
    def __init__(self, cin, cout, stride, expand=2):
        super().__init__()
        mid = cin * expand
        self.exp = ConvBNLayer(cin, mid, 1, act="swish")
        self.dw = ConvBNLayer(mid, mid, 3, stride, groups=mid, act="swish")
        self.proj = ConvBNLayer(mid, cout, 1, act=None)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.proj(self.dw(self.exp(x)))
        return x + y if self.use_res else y


class MobileViTBlock(nn.Layer):
    """Local conv, unfold into 2x2 patches (reshape/transpose), transformer, fold, concat with the input, fuse."""

    def __init__(self, c, dim, patch=2):
        super().__init__()
        self.conv1 = ConvBNLayer(c, c, 3, act="swish")
        self.conv2 = nn.Conv2D(c, dim, 1, bias_attr=False)
        self.transformer = nn.LayerList([Block(dim, 2)])
        self.norm = nn.LayerNorm(dim)
        self.conv3 = ConvBNLayer(dim, c, 1, act="swish")
        self.conv4 = ConvBNLayer(2 * c, c, 3, act="swish")
        self.patch, self.dim = patch, dim

    def forward(self, x):
        res = x
        x = self.conv2(self.conv1(x))
        p, d = self.patch, self.dim
        h, w = x.shape[2], x.shape[3]
        x = x.reshape([-1, d, h // p, p, w // p, p]).transpose([0, 3, 5, 2, 4, 1]).reshape([-1, (h // p) * (w // p), d])
        for blk in self.transformer:
            x = blk(x)
        x = self.norm(x)
        x = x.reshape([-1, p, p, h // p, w // p, d]).transpose([0, 5, 3, 1, 4, 2]).reshape([-1, d, h, w])
        x = self.conv3(x)
        return self.conv4(paddle.concat([res, x], axis=1))


class MobileViT(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNLayer(3, 8, 3, 2, act="swish")
        self.layer1 = InvertedResidual(8, 16, 2)
        self.layer2 = nn.Sequential(InvertedResidual(16, 16, 2), MobileViTBlock(16, 24))
        self.conv_1x1_exp = ConvBNLayer(16, 48, 1, act="swish")
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.classifier = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.conv_1x1_exp(self.layer2(self.layer1(self.conv1(x))))
        return self.classifier(paddle.flatten(self.pool(x), 1))


class ESEModule(nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv = nn.Conv2D(c, c, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        identity = x
        x = self.sigmoid(self.conv(self.avg_pool(x)))
        return paddle.multiply(x=identity, y=x)


class HGBlock(nn.Layer):
    def __init__(self, cin, mid, cout, layer_num, identity=False):
        super().__init__()
        self.identity = identity
        self.layers = nn.LayerList([ConvBNLayer(cin if i == 0 else mid, mid, 3, act="relu") for i in range(layer_num)])
        self.aggregation_conv = ConvBNLayer(cin + layer_num * mid, cout, 1, act="relu")
        self.att = ESEModule(cout)

    def forward(self, x):
        identity = x
        output = [x]
        for layer in self.layers:
            x = layer(x)
            output.append(x)
        x = self.att(self.aggregation_conv(paddle.concat(output, axis=1)))
        return x + identity if self.identity else x


class PPHGNet(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(ConvBNLayer(3, 8, 3, 2, act="relu"), ConvBNLayer(8, 8, 3, act="relu"))
        self.pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.stages = nn.LayerList([HGBlock(8, 8, 16, 2), HGBlock(16, 8, 16, 2, identity=True)])
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.last_conv = nn.Conv2D(16, 48, 1, bias_attr=False)
        self.act = nn.ReLU()
        self.flatten = nn.Flatten(start_axis=1, stop_axis=-1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = self.act(self.last_conv(self.avg_pool(x)))
        return self.fc(self.flatten(x))


ZOO = {
    "pplcnet": PPLCNet,
    "mobilenetv3": MobileNetV3,
    "ghostnet": GhostNet,
    "esnet": ESNet,
    "efficientnet": EfficientNet,
    "deit": DeiT,
    "pvt": PVT,
    "mobilevit": MobileViT,
    "pphgnet": PPHGNet,
}


def build(name: str, seed: int = 0) -> nn.Layer:
    """The zoo model ``name`` with seeded random weights and non-trivial BatchNorm statistics, in eval mode."""
    paddle.seed(seed)
    model = ZOO[name]()
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):  # running stats a trained model would have, not (0, 1)
            c = layer._mean.shape[0]
            layer._mean.set_value(paddle.uniform([c], min=-0.1, max=0.1))
            layer._variance.set_value(paddle.uniform([c], min=0.5, max=1.5))
            layer.weight.set_value(paddle.uniform([c], min=0.8, max=1.2))
    model.eval()
    return model
