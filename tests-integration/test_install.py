"""Everything installed together: the CLI sees every package, versions agree."""

import importlib

import pytest

from slim_core.cli import installed_packages, main

MODULES = ["slim_core", "slim_analysis", "slim_prune", "slim_quant", "slim_distill", "slim_nas", "slim_deploy", "slim_auto"]


@pytest.mark.parametrize("module", MODULES)
def test_every_package_imports_at_one_version(module):
    import slim_core

    assert importlib.import_module(module).__version__ == slim_core.__version__


def test_meta_package_installed_everything():
    pkgs = installed_packages()
    for name in ["slim-toolkit"] + [m.replace("_", "-") for m in MODULES]:
        assert name in pkgs, name


def test_cli_help_lists_core_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "doctor" in out and "demo" in out
