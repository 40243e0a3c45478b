"""Quantization-aware training: trainable fake quantizers (STE, LSQ / LSQ+, PACT), BN folded
in a train-friendly way, ``convert`` to a model that exports like a PTQ model.

Example:
    >>> import paddle
    >>> from slim_core import demo
    >>> from slim_quant.qat import QATConfig, prepare_qat, convert
    >>> model, _ = demo.train_demo_model(epochs=1)
    >>> x, y = demo.load_digits("train")
    >>> qmodel = prepare_qat(model, QATConfig(weight_bits=4, activation_quanter="lsq"), [x[:64]])
    >>> opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=qmodel.parameters())
    >>> qmodel.train()
    >>> loss = paddle.nn.functional.cross_entropy(qmodel(paddle.to_tensor(x[:32])), paddle.to_tensor(y[:32]))
    >>> loss.backward(); opt.step(); opt.clear_grad()
    >>> int_model = convert(qmodel)
    >>> sorted(int_model.slim_quant_state.layers)
    ['conv1', 'conv2', 'fc1', 'fc2']
"""

from slim_quant.qat.api import QATState, convert, prepare_qat
from slim_quant.qat.config import QATConfig
from slim_quant.qat.layers import QATLayer, qat_layers
from slim_quant.qat.quanters import (
    QUANTERS,
    AbsMaxQuanter,
    LSQPlusQuanter,
    LSQQuanter,
    MovingAverageAbsMaxQuanter,
    PACTQuanter,
    Quanter,
)

__all__ = [
    "QATConfig",
    "prepare_qat",
    "convert",
    "QATState",
    "QATLayer",
    "qat_layers",
    "QUANTERS",
    "Quanter",
    "AbsMaxQuanter",
    "MovingAverageAbsMaxQuanter",
    "LSQQuanter",
    "LSQPlusQuanter",
    "PACTQuanter",
]
