import pytest

from slim_core import ConfigError, DataError, ModelLoadError, Registry, SlimError, UnsupportedOpError
from slim_core.errors import ExportError, OutputExistsError, PaddleVersionError


@pytest.mark.parametrize(
    "cls", [ConfigError, ModelLoadError, UnsupportedOpError, DataError, PaddleVersionError, ExportError, OutputExistsError]
)
def test_every_error_is_a_slim_error(cls):
    assert issubclass(cls, SlimError)


def test_registry_register_and_get():
    reg = Registry("criterion")

    @reg.register("l1")
    def l1(x):
        return x

    assert reg.get("l1") is l1
    assert reg.names() == ["l1"]


def test_registry_unknown_suggests_closest():
    reg = Registry("calibrator")
    reg.register("abs_max")(object())
    with pytest.raises(ConfigError, match=r"unknown calibrator 'absmax'.*did you mean 'abs_max'"):
        reg.get("absmax")


def test_registry_duplicate_needs_overwrite():
    reg = Registry("loss")
    reg.register("kl")(1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("kl")(2)
    reg.register("kl", overwrite=True)(3)
    assert reg["kl"] == 3
