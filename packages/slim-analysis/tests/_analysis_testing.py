"""Shared helpers of the slim-analysis tests."""

import functools

import paddle


@functools.cache
def zoo(name: str):
    """(model, graph, input shape) for a paddle.vision model, traced once per test session."""
    import slim_core
    from slim_core.graph.zoo import input_shape

    paddle.seed(0)
    model = getattr(paddle.vision.models, name)(num_classes=10)
    shape = input_shape(name)
    return model, slim_core.trace(model, input_spec=[shape]), shape


class SmallCNN(paddle.nn.Layer):
    """conv(3->4, k3, bias) -> BN -> ReLU -> maxpool 2 -> conv(4->6, k1, no bias) -> GAP -> linear(6->5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(3, 4, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(4)
        self.pool = paddle.nn.MaxPool2D(2)
        self.conv2 = paddle.nn.Conv2D(4, 6, 1, bias_attr=False)
        self.gap = paddle.nn.AdaptiveAvgPool2D(1)
        self.fc = paddle.nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(paddle.nn.functional.relu(self.bn(self.conv1(x))))
        x = self.gap(self.conv2(x))
        return self.fc(paddle.flatten(x, 1))
