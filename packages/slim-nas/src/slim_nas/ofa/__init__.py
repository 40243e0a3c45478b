"""Once-for-all supernets: super layers, shipped supernets, the OFA trainer and export."""

from slim_nas.ofa.convert import ElasticModel, to_supernet
from slim_nas.ofa.layers import SuperBatchNorm2D, SuperConv2D, SuperLinear
from slim_nas.ofa.supernet import (
    BasicBlock,
    InvertedResidual,
    OFAMobileNetV2,
    OFAResNet,
    SubnetModel,
    Supernet,
    make_divisible,
    mobilenetv2_space,
    resnet_space,
    uniform_config,
)

__all__ = [
    "to_supernet",
    "ElasticModel",
    "SuperConv2D",
    "SuperBatchNorm2D",
    "SuperLinear",
    "Supernet",
    "OFAMobileNetV2",
    "OFAResNet",
    "SubnetModel",
    "InvertedResidual",
    "BasicBlock",
    "mobilenetv2_space",
    "resnet_space",
    "uniform_config",
    "make_divisible",
]

from slim_nas.ofa.train import OFA, PHASES, OFAConfig, recalibrate_bn  # noqa: E402

__all__ += ["OFA", "OFAConfig", "PHASES", "recalibrate_bn"]
