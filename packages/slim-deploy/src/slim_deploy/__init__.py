"""slim-deploy: export, run and verify deployable models; BN folding and re-parameterization.

Example:
    >>> import paddle, slim_deploy
    >>> net = paddle.vision.models.resnet18(num_classes=10)                              # doctest: +SKIP
    >>> slim_deploy.export(net, "out/r18", [None, 3, 224, 224], format=["paddle", "onnx"])   # doctest: +SKIP
    >>> run = slim_deploy.Predictor("out/r18", backend="auto", threads=2)                   # doctest: +SKIP
    >>> print(run.describe())                                                              # doctest: +SKIP
"""

from slim_core._paddle import require_paddle
from slim_deploy.__about__ import __version__

require_paddle()

from slim_core.spec import normalize_input_spec  # noqa: E402
from slim_deploy.benchmark import BenchmarkReport, BenchmarkRow, benchmark  # noqa: E402
from slim_deploy.bn_fold import fold_bn, fold_bn_  # noqa: E402
from slim_deploy.compare import CompareReport, OutputAgreement, compare  # noqa: E402
from slim_deploy.errors import MissingExtraError, VerificationError  # noqa: E402
from slim_deploy.export import ExportResult, convert, export  # noqa: E402
from slim_deploy.manifest import MANIFEST_NAME, Manifest, has_quant_ops, read_manifest, write_manifest  # noqa: E402
from slim_deploy.predictor import Candidate, Predictor, paddle_to_onnx  # noqa: E402
from slim_deploy.rep import REP_BLOCKS, ACBlock, DBBlock, RepBlock, RepConfig, RepVGGBlock, merge, merge_, rep_blocks, reparameterize  # noqa: E402

__all__ = [
    "__version__",
    "export",
    "convert",
    "ExportResult",
    "Predictor",
    "Candidate",
    "paddle_to_onnx",
    "compare",
    "CompareReport",
    "OutputAgreement",
    "benchmark",
    "BenchmarkReport",
    "BenchmarkRow",
    "Manifest",
    "MANIFEST_NAME",
    "read_manifest",
    "write_manifest",
    "has_quant_ops",
    "fold_bn",
    "fold_bn_",
    "reparameterize",
    "merge",
    "merge_",
    "rep_blocks",
    "RepConfig",
    "RepBlock",
    "RepVGGBlock",
    "ACBlock",
    "DBBlock",
    "REP_BLOCKS",
    "normalize_input_spec",
    "MissingExtraError",
    "VerificationError",
]
