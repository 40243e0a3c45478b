"""Search spaces, one-shot supernets (OFA), DARTS and search strategies."""

from slim_core._paddle import require_paddle
from slim_nas.__about__ import __version__

require_paddle()

__all__ = ["__version__"]
