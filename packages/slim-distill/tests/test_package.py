from pathlib import Path

import slim_core
import slim_distill
from slim_core.testing import undeclared_sibling_imports

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def test_version_in_lock_step_with_core():
    assert slim_distill.__version__ == slim_core.__version__


def test_imports_only_declared_siblings():
    assert undeclared_sibling_imports(PACKAGE_DIR) == []
