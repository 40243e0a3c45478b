"""slim-core: the foundation of slim (errors, configs, registries, data, model I/O, CLI).

Example:
    >>> import slim_core
    >>> slim_core.SlimError
    <class 'slim_core.errors.SlimError'>
"""

import os as _os
import sys as _sys

from slim_core.__about__ import __version__
from slim_core._paddle import require_paddle
from slim_core.atomic import atomic_dir, atomic_write, check_writable
from slim_core.config import SlimConfig, check_choice, check_range, dump_yaml, load_yaml
from slim_core.data import Batches, check_array, data_errors, to_numpy
from slim_core.errors import (
    ConfigError,
    DataError,
    ExportError,
    ModelLoadError,
    OutputExistsError,
    PaddleVersionError,
    SlimError,
    UnsupportedOpError,
    error_summary,
)
from slim_core.graph import ChannelGroup, ChannelMember, ModelGraph, trace
from slim_core.model_io import (
    InferenceModel,
    check_model_files,
    convert_to_pir,
    detect_format,
    load_inference_model,
    load_state_dict,
    save_inference_model,
)
from slim_core.progress import progress, quiet, set_quiet
from slim_core.registry import Registry
from slim_core.rollback import LayerSnapshot, all_or_nothing, in_place

# The `slim` command must answer --version and doctor without a working Paddle (that is when a user
# needs them); its subcommands that need Paddle say so when run. Everything else fails here, clearly.
if _os.path.basename(_sys.argv[0] or "") not in ("slim", "slim.exe"):
    require_paddle()

__all__ = [
    "__version__",
    "require_paddle",
    "SlimError",
    "ConfigError",
    "ModelLoadError",
    "UnsupportedOpError",
    "DataError",
    "PaddleVersionError",
    "ExportError",
    "OutputExistsError",
    "error_summary",
    "all_or_nothing",
    "in_place",
    "LayerSnapshot",
    "SlimConfig",
    "check_range",
    "check_choice",
    "load_yaml",
    "dump_yaml",
    "Registry",
    "Batches",
    "check_array",
    "to_numpy",
    "InferenceModel",
    "load_inference_model",
    "save_inference_model",
    "detect_format",
    "convert_to_pir",
    "load_state_dict",
    "progress",
    "quiet",
    "set_quiet",
    "atomic_write",
    "atomic_dir",
    "check_writable",
    "trace",
    "ModelGraph",
    "ChannelGroup",
    "ChannelMember",
    "check_model_files",
    "data_errors",
]
