"""Architectures the graph is tested on: ``paddle.vision.models`` and tiny model-zoo-style networks.

``VISION_MODELS`` are built by Paddle; ``STYLE_MODELS`` are small networks written the
way their original projects write them (hand-written attention, split + channel shuffle,
``split`` into scales, slices, concat feeding a residual add), for 32x32 inputs.

Example:
    >>> from slim_core.graph.zoo import VISION_MODELS, input_shape
    >>> input_shape("alexnet")
    [1, 3, 224, 224]
    >>> model = build_style_model("deit_like")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["VISION_MODELS", "MIN_SIZES", "input_shape", "STYLE_MODELS", "build_style_model"]

STYLE_MODELS: dict[str, str] = {
    "pvt_v2_like": "PVTv2Like",
    "deit_like": "DeiTLike",
    "mobilevit_like": "MobileViTLike",
    "esnet_like": "ESNetLike",
    "res2net_like": "Res2NetLike",
    "efficientnet_like": "EfficientNetLike",
    "ghostnet_like": "GhostNetLike",
}
"""``{name: class in slim_core.graph.zoo_nets}``; every one takes ``[N, 3, 32, 32]`` and has 10 classes."""


def build_style_model(name: str) -> Any:
    """Build one of :data:`STYLE_MODELS` with random weights (needs Paddle).

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    from slim_core.errors import ConfigError

    if name not in STYLE_MODELS:
        raise ConfigError(f"unknown zoo model {name!r}; known: {sorted(STYLE_MODELS)}")
    from slim_core.graph import zoo_nets

    return getattr(zoo_nets, STYLE_MODELS[name])()


VISION_MODELS: tuple[str, ...] = (
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "vgg11",
    "densenet121",
    "shufflenet_v2_x0_25",
    "squeezenet1_0",
    "squeezenet1_1",
    "googlenet",
    "inception_v3",
    "alexnet",
)

# GoogLeNet's auxiliary heads and AlexNet's classifier fix the input size; InceptionV3 needs >= 75 px.
MIN_SIZES: dict[str, int] = {"inception_v3": 160, "googlenet": 224, "alexnet": 224}


def input_shape(name: str, size: int = 64, batch: int = 1) -> list[int]:
    """A small NCHW input shape that ``name`` accepts (``size`` unless the model needs more)."""
    side = MIN_SIZES[name] if name in ("googlenet", "alexnet") else max(size, MIN_SIZES.get(name, 0))
    return [batch, 3, side, side]
