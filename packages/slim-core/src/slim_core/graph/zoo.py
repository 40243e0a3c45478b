"""The ``paddle.vision.models`` architectures the graph is tested on, with the smallest input each accepts.

Example:
    >>> from slim_core.graph.zoo import VISION_MODELS, input_shape
    >>> input_shape("alexnet")
    [1, 3, 224, 224]
"""

from __future__ import annotations

__all__ = ["VISION_MODELS", "MIN_SIZES", "input_shape"]

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
