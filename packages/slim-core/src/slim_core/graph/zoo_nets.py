"""Tiny networks written the way their original projects write them (see :mod:`slim_core.graph.zoo`).

Each keeps the coding idioms that matter to the graph (hand-written attention with
``reshape`` + ``paddle.matmul``, ``paddle.split`` + channel shuffle, ``split`` into
scales, ``concat`` feeding a residual add, token <-> image reshapes) at a width and
depth small enough for 32x32 inputs and fast tests. Imported lazily: it needs Paddle.
"""

from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = [
    "LoopDecoder",
    "PaddleClasAttention",
    "DeiTLike",
    "PVTv2Like",
    "MobileViTLike",
    "ESNetLike",
    "Res2NetLike",
    "EfficientNetLike",
    "GhostNetLike",
]


class ConvBNAct(nn.Layer):
    def __init__(self, cin, cout, k=1, stride=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.act == "relu":
            return F.relu(x)
        if self.act == "hardswish":
            return F.hardswish(x)
        if self.act == "swish":
            return F.swish(x)
        return x


class SEModule(nn.Layer):
    """PaddleClas SE: avg pool, 1x1 conv, relu, 1x1 conv, hardsigmoid, paddle.multiply."""

    def __init__(self, ch, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.conv1 = nn.Conv2D(ch, ch // reduction, 1)
        self.conv2 = nn.Conv2D(ch // reduction, ch, 1)

    def forward(self, x):
        s = F.relu(self.conv1(self.avg_pool(x)))
        s = F.hardsigmoid(self.conv2(s))
        return paddle.multiply(x=x, y=s)


# -- transformers -------------------------------------------------------------------------
class Mlp(nn.Layer):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Layer):
    """timm/PaddleClas-style attention: one qkv Linear, reshape to heads, paddle.matmul, softmax."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        N = x.shape[1]
        qkv = self.qkv(x).reshape((-1, N, 3, self.num_heads, self.head_dim)).transpose((2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = paddle.matmul(q, k.transpose((0, 1, 3, 2))) * self.scale
        attn = F.softmax(attn, axis=-1)
        x = paddle.matmul(attn, v).transpose((0, 2, 1, 3)).flatten(2)
        return self.proj(x)


class PaddleClasAttention(Attention):
    """PaddleClas ViT attention: the head width is ``C // num_heads`` of the *input* width and the heads
    are merged back with ``reshape((-1, N, C))``, so the code ties the head layout to the residual width."""

    def forward(self, x):
        N, C = x.shape[1:]
        qkv = self.qkv(x).reshape((-1, N, 3, self.num_heads, C // self.num_heads)).transpose((2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(q.matmul(k.transpose((0, 1, 3, 2))) * self.scale, axis=-1)
        return self.proj(attn.matmul(v).transpose((0, 2, 1, 3)).reshape((-1, N, C)))


class Block(nn.Layer):
    def __init__(self, dim, num_heads, mlp_ratio=2.0, attn_cls=Attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=1e-6)
        self.attn = attn_cls(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, epsilon=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeiTLike(nn.Layer):
    """DeiT/ViT: conv patch embed, class token (expand + concat), position embedding, blocks, head on token 0."""

    def __init__(self, dim=32, depth=2, num_heads=4, patch=8, img=32, num_classes=10, attn_cls=Attention):
        super().__init__()
        self.patch_embed = nn.Conv2D(3, dim, patch, stride=patch)
        n = (img // patch) ** 2
        self.cls_token = self.create_parameter([1, 1, dim], default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self.pos_embed = self.create_parameter([1, n + 1, dim], default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self.blocks = nn.LayerList([Block(dim, num_heads, attn_cls=attn_cls) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, epsilon=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        B = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose((0, 2, 1))
        cls_tokens = self.cls_token.expand((B, -1, -1))
        x = paddle.concat((cls_tokens, x), axis=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.head(x[:, 0])


class DWConv(nn.Layer):
    """PVT-v2 MLP depthwise conv: tokens -> image -> depthwise 3x3 -> tokens."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2D(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        x = x.transpose([0, 2, 1]).reshape([B, C, H, W])
        x = self.dwconv(x)
        return x.flatten(2).transpose([0, 2, 1])


class PVTAttention(nn.Layer):
    """PVT-v2 spatial-reduction attention: q Linear, sr conv + LayerNorm, kv Linear, heads."""

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2D(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape([B, N, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])
        if self.sr_ratio > 1:
            x_ = x.transpose([0, 2, 1]).reshape([B, C, H, W])
            x_ = self.sr(x_).flatten(2).transpose([0, 2, 1])
            x_ = self.norm(x_)
            kv = self.kv(x_).reshape([B, -1, 2, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        else:
            kv = self.kv(x).reshape([B, -1, 2, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose([0, 1, 3, 2])) * self.scale
        attn = F.softmax(attn, axis=-1)
        x = (attn @ v).transpose([0, 2, 1, 3]).flatten(2)
        return self.proj(x)


class PVTBlock(nn.Layer):
    def __init__(self, dim, num_heads, sr_ratio, mlp_ratio=2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PVTAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.dwconv = DWConv(dim * mlp_ratio)
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        y = self.fc1(self.norm2(x))
        y = self.fc2(F.gelu(self.dwconv(y, H, W)))
        return x + y


class OverlapPatchEmbed(nn.Layer):
    def __init__(self, cin, dim, k, stride):
        super().__init__()
        self.proj = nn.Conv2D(cin, dim, k, stride=stride, padding=k // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, H, W = x.shape
        x = x.flatten(2).transpose([0, 2, 1])
        return self.norm(x), H, W


class PVTv2Like(nn.Layer):
    """PVT-v2: overlapping patch embeds, spatial-reduction attention, depthwise-conv MLP, two stages."""

    def __init__(self, dims=(16, 32), heads=(1, 2), srs=(2, 1), num_classes=10):
        super().__init__()
        self.embeds = nn.LayerList([OverlapPatchEmbed(3, dims[0], 7, 4), OverlapPatchEmbed(dims[0], dims[1], 3, 2)])
        self.blocks = nn.LayerList([PVTBlock(d, h, s) for d, h, s in zip(dims, heads, srs)])
        self.norms = nn.LayerList([nn.LayerNorm(d) for d in dims])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        B = x.shape[0]
        for i in range(len(self.blocks)):
            x, H, W = self.embeds[i](x)
            x = self.blocks[i](x, H, W)
            x = self.norms[i](x)
            if i != len(self.blocks) - 1:
                x = x.reshape([B, H, W, -1]).transpose([0, 3, 1, 2])
        return self.head(x.mean(axis=1))


class MobileViTBlock(nn.Layer):
    """MobileViT (PaddleClas): local conv, unfold to patches with reshape/transpose, transformer, fold back, fuse."""

    def __init__(self, cin, dim, num_heads=2, patch=2):
        super().__init__()
        self.conv_3x3_in = ConvBNAct(cin, cin, 3, act="swish")
        self.conv_1x1_in = nn.Conv2D(cin, dim, 1, bias_attr=False)
        self.global_rep = nn.LayerList([Block(dim, num_heads)])
        self.norm = nn.LayerNorm(dim)
        self.conv_1x1_out = ConvBNAct(dim, cin, 1, act="swish")
        self.conv_3x3_out = ConvBNAct(2 * cin, cin, 3, act="swish")
        self.patch_h = self.patch_w = patch

    def unfolding(self, x):
        ph, pw = self.patch_h, self.patch_w
        B, C, H, W = x.shape
        nh, nw = H // ph, W // pw
        x = x.reshape([B * C * nh, ph, nw, pw]).transpose([0, 2, 1, 3])
        x = x.reshape([B, C, nh * nw, ph * pw]).transpose([0, 3, 2, 1])
        return x.reshape([B * ph * pw, nh * nw, -1]), (B, C, H, W, nh, nw)

    def folding(self, x, info):
        B, C, H, W, nh, nw = info
        ph, pw = self.patch_h, self.patch_w
        x = x.reshape([B, ph * pw, nh * nw, -1]).transpose([0, 3, 2, 1])
        C = x.shape[1]
        x = x.reshape([B * C * nh, nw, ph, pw]).transpose([0, 2, 1, 3])
        return x.reshape([B, C, nh * ph, nw * pw])

    def forward(self, x):
        res = x
        fm = self.conv_1x1_in(self.conv_3x3_in(x))
        patches, info = self.unfolding(fm)
        for blk in self.global_rep:
            patches = blk(patches)
        patches = self.norm(patches)
        fm = self.conv_1x1_out(self.folding(patches, info))
        return self.conv_3x3_out(paddle.concat([res, fm], axis=1))


class InvertedResidual(nn.Layer):
    def __init__(self, cin, cout, stride, expand=2, act="swish"):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = ConvBNAct(cin, hidden, 1, act=act)
        self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=act)
        self.project = ConvBNAct(hidden, cout, 1, act=None)

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.use_res else y


class MobileViTLike(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act="swish")
        self.mv2 = nn.LayerList([InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2)])
        self.mvit = MobileViTBlock(24, 32)
        self.conv_out = ConvBNAct(24, 64, 1, act="swish")
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for m in self.mv2:
            x = m(x)
        x = self.conv_out(self.mvit(x))
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# -- CNNs --------------------------------------------------------------------------------
def channel_shuffle(x, groups):
    """PaddleClas ESNet/ShuffleNetV2 channel shuffle (shapes read from ``x``)."""
    batch_size, num_channels, height, width = x.shape[0:4]
    channels_per_group = num_channels // groups
    x = paddle.reshape(x=x, shape=[batch_size, groups, channels_per_group, height, width])
    x = paddle.transpose(x=x, perm=[0, 2, 1, 3, 4])
    return paddle.reshape(x=x, shape=[batch_size, num_channels, height, width])


class ESBlock1(nn.Layer):
    """ESNet stride-1 block: split in halves, pw -> dw -> SE -> pw on one half, concat, shuffle."""

    def __init__(self, ch, mid):
        super().__init__()
        self.pw_1_1 = ConvBNAct(ch // 2, mid // 2, 1, act="hardswish")
        self.dw_1 = ConvBNAct(mid // 2, mid // 2, 3, groups=mid // 2, act=None)
        self.se = SEModule(mid)
        self.pw_1_2 = ConvBNAct(mid, ch // 2, 1, act="hardswish")

    def forward(self, x):
        x1, x2 = paddle.split(x, num_or_sections=[x.shape[1] // 2, x.shape[1] // 2], axis=1)
        x2 = self.pw_1_1(x2)
        x3 = self.dw_1(x2)
        x3 = paddle.concat([x2, x3], axis=1)
        x3 = self.se(x3)
        x3 = self.pw_1_2(x3)
        return channel_shuffle(paddle.concat([x1, x3], axis=1), 2)


class ESBlock2(nn.Layer):
    """ESNet stride-2 block: two branches concatenated, then dw + pw fuse."""

    def __init__(self, cin, mid, cout):
        super().__init__()
        self.dw_1 = ConvBNAct(cin, cin, 3, 2, groups=cin, act=None)
        self.pw_1 = ConvBNAct(cin, cout // 2, 1, act="hardswish")
        self.pw_2_1 = ConvBNAct(cin, mid // 2, 1, act="hardswish")
        self.dw_2 = ConvBNAct(mid // 2, mid // 2, 3, 2, groups=mid // 2, act=None)
        self.se = SEModule(mid // 2)
        self.pw_2_2 = ConvBNAct(mid // 2, cout // 2, 1, act="hardswish")
        self.concat_dw = ConvBNAct(cout, cout, 3, groups=cout, act=None)
        self.concat_pw = ConvBNAct(cout, cout, 1, act="hardswish")

    def forward(self, x):
        x1 = self.pw_1(self.dw_1(x))
        x2 = self.pw_2_2(self.se(self.dw_2(self.pw_2_1(x))))
        x = paddle.concat([x1, x2], axis=1)
        return self.concat_pw(self.concat_dw(x))


class ESNetLike(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNAct(3, 24, 3, 2, act="hardswish")
        self.max_pool = nn.MaxPool2D(3, 2, 1)
        self.blocks = nn.LayerList([ESBlock2(24, 48, 48), ESBlock1(48, 48), ESBlock1(48, 64), ESBlock2(48, 96, 96), ESBlock1(96, 96)])
        self.last_conv = ConvBNAct(96, 128, 1, act="hardswish")
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.max_pool(self.conv1(x))
        for b in self.blocks:
            x = b(x)
        x = F.adaptive_avg_pool2d(self.last_conv(x), 1)
        return self.fc(paddle.flatten(x, 1))


class Res2Block(nn.Layer):
    """Res2Net bottleneck (PaddleClas): 1x1 conv, ``paddle.split`` into scales, hierarchical 3x3 convs, concat."""

    def __init__(self, cin, cout, width, scales, stride):
        super().__init__()
        self.scales, self.stride = scales, stride
        self.conv0 = ConvBNAct(cin, width * scales, 1)
        self.conv1_list = nn.LayerList([ConvBNAct(width, width, 3, stride) for _ in range(scales - 1)])
        self.pool2d_avg = nn.AvgPool2D(3, stride, 1)
        self.conv2 = ConvBNAct(width * scales, cout, 1, act=None)
        self.short = ConvBNAct(cin, cout, 1, stride, act=None) if (cin != cout or stride != 1) else None

    def forward(self, inputs):
        y = self.conv0(inputs)
        xs = paddle.split(y, self.scales, 1)
        ys = []
        for s, conv1 in enumerate(self.conv1_list):
            if s == 0 or self.stride == 2:
                ys.append(conv1(xs[s]))
            else:
                ys.append(conv1(paddle.add(xs[s], ys[-1])))
        ys.append(xs[-1] if self.stride == 1 else self.pool2d_avg(xs[-1]))
        conv2 = self.conv2(paddle.concat(ys, axis=1))
        short = inputs if self.short is None else self.short(inputs)
        return F.relu(paddle.add(x=short, y=conv2))


class Res2NetLike(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2)
        self.blocks = nn.LayerList([Res2Block(16, 32, 8, 4, 1), Res2Block(32, 32, 8, 4, 1), Res2Block(32, 64, 16, 4, 2)])
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SamePadConv(nn.Layer):
    """EfficientNet (PaddleClas) TF-"SAME" conv: pad one extra row/column, conv, then crop with a slice."""

    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=k // 2 + 1, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.stride = stride

    def forward(self, x):
        y = self.conv(x)
        y = y[:, :, 1:-1, 1:-1] if self.stride == 1 else y[:, :, 1:, 1:]
        return F.swish(self.bn(y))


class MBConv(nn.Layer):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNAct(cin, hidden, 1, act="swish") if expand != 1 else None
        self.dw = SamePadConv(hidden, hidden, 3, stride, groups=hidden)
        self.se = SEModule(hidden)
        self.project = ConvBNAct(hidden, cout, 1, act=None)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.se(self.dw(y)))
        return paddle.add(x, y) if self.use_res else y


class EfficientNetLike(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = SamePadConv(3, 16, 3, 2)
        self.blocks = nn.LayerList([MBConv(16, 16, 1, 1), MBConv(16, 24, 2, 4), MBConv(24, 24, 1, 4), MBConv(24, 40, 2, 4)])
        self.head = ConvBNAct(40, 96, 1, act="swish")
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1))


class GhostModule(nn.Layer):
    """GhostNet (PaddleClas): primary conv, cheap depthwise conv on its output, concat of both."""

    def __init__(self, cin, cout, ratio=2, relu=True):
        super().__init__()
        init = int(math.ceil(cout / ratio))
        act = "relu" if relu else None
        self.primary_conv = ConvBNAct(cin, init, 1, act=act)
        self.cheap_operation = ConvBNAct(init, init * (ratio - 1), 3, groups=init, act=act)

    def forward(self, inputs):
        x = self.primary_conv(inputs)
        y = self.cheap_operation(x)
        return paddle.concat([x, y], axis=1)


class GhostBottleneck(nn.Layer):
    def __init__(self, cin, hidden, cout, stride, use_se):
        super().__init__()
        self.ghost_module_1 = GhostModule(cin, hidden)
        self.depthwise_conv = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=None) if stride == 2 else None
        self.se_block = SEModule(hidden) if use_se else None
        self.ghost_module_2 = GhostModule(hidden, cout, relu=False)
        self.identity = stride == 1 and cin == cout
        if not self.identity:
            self.shortcut_depthwise = ConvBNAct(cin, cin, 3, stride, groups=cin, act=None)
            self.shortcut_conv = ConvBNAct(cin, cout, 1, act=None)

    def forward(self, inputs):
        x = self.ghost_module_1(inputs)
        if self.depthwise_conv is not None:
            x = self.depthwise_conv(x)
        if self.se_block is not None:
            x = self.se_block(x)
        x = self.ghost_module_2(x)
        shortcut = inputs if self.identity else self.shortcut_conv(self.shortcut_depthwise(inputs))
        return paddle.add(x=x, y=shortcut)


class GhostNetLike(nn.Layer):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNAct(3, 16, 3, 2)
        cfg = [(16, 16, 16, 1, False), (16, 48, 24, 2, False), (24, 72, 24, 1, True), (24, 72, 40, 2, True)]
        self.blocks = nn.LayerList([GhostBottleneck(*c) for c in cfg])
        self.conv_last = ConvBNAct(40, 96, 1)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for b in self.blocks:
            x = b(x)
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(self.conv_last(x), 1), 1))


class LoopDecoder(nn.Layer):
    """A recurrent decoder with a tensor-controlled ``while`` loop (``steps`` iterations of a residual cell).

    Exported to a static program the loop becomes a ``while`` op whose body holds the cell. Written
    with operators and layers only, so it also exports to a legacy program.
    """

    def __init__(self, dim=32, steps=4, num_classes=10):
        super().__init__()
        self.enc = nn.Linear(16, dim)
        self.cell = nn.Linear(dim, dim)
        self.act = nn.ReLU()
        self.head = nn.Linear(dim, num_classes)
        self.steps = steps

    def forward(self, x):
        h = self.act(self.enc(x))
        i = paddle.zeros([1], "int64")
        n = paddle.full([1], self.steps, "int64")
        while i < n:
            h = self.act(self.cell(h)) + h
            i = i + 1
        return self.head(h)
