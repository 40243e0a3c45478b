"""Small models shared by the tests (imported by test modules, not collected)."""

import paddle
import paddle.nn as nn


class SharedBlockNet(nn.Layer):
    """``block`` runs twice in one forward; ``pair`` returns a tuple."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.block = nn.Linear(width, width)
        self.act = nn.ReLU()
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        h = self.block(x)
        h = self.act(h)
        h = self.block(h)
        return self.head(h)


class TwoOut(nn.Layer):
    def forward(self, x):
        return x * 2.0, x + 1.0


class TupleNet(nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.split = TwoOut()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a, b = self.split(x)
        return self.fc(a + b)


class TokenEncoder(nn.Layer):
    """A small transformer encoder classifier over [N, L, d] tokens."""

    def __init__(self, d_model: int, num_classes: int = 5, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=2 * d_model, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x):
        h = self.encoder(self.embed(x))
        return self.head(h.mean(axis=1))


class DropoutStudent(nn.Layer):
    """A small CNN for 1x8x8 digits with dropout (exercises the RNG state on resume)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2D(width)
        self.conv2 = nn.Conv2D(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2D(2 * width)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(2 * width * 64, 10)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.bn1(self.conv1(x)))
        x = paddle.nn.functional.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop(paddle.flatten(x, 1)))


def minimise_distill_loss(module, x, steps: int, lr: float = 0.01) -> tuple[float, float]:
    """Train ``module`` (a Distiller or MutualLearner) on its distillation loss alone; return (first, last) loss."""
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=module.parameters())
    module.train()
    module(x)
    first = float(module.loss())
    for _ in range(steps):
        module(x)
        loss = module.loss()
        loss.backward()
        opt.step()
        opt.clear_grad()
    module(x)
    return first, float(module.loss())
