from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest

from slim_core import ConfigError, SlimConfig, check_range, load_yaml


@dataclass(frozen=True)
class Inner(SlimConfig):
    name: str = "conv"
    weight: float = 1.0


@dataclass(frozen=True)
class Outer(SlimConfig):
    ratio: float = 0.5
    criterion: Literal["l1", "l2", "fpgm"] = "l1"
    steps: int = 1
    skip: tuple[str, ...] = ()
    per_layer: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    pairs: list[Inner] = field(default_factory=list)
    limit: int | None = None

    def validate(self):
        check_range("ratio", self.ratio, 0.0, 1.0, hi_open=True)


CONFIGS = [
    Outer(),
    Outer(
        ratio=0.25,
        criterion="fpgm",
        steps=3,
        skip=("fc",),
        per_layer={"conv1": 0.1},
        inner=Inner("x", 2.0),
        pairs=[Inner("a"), Inner("b", 0.5)],
        limit=7,
    ),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["defaults", "everything-set"])
def test_dict_and_yaml_round_trip(cfg, tmp_path):
    assert Outer.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert Outer.from_yaml(path) == cfg


def test_int_accepted_for_float():
    assert Outer(ratio=0).ratio == 0.0


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'critrion'.*did you mean 'criterion'"):
        Outer.from_dict({"critrion": "l1"})


def test_nested_unknown_key_names_path():
    with pytest.raises(ConfigError, match=r"Outer.inner: unknown key 'wieght'"):
        Outer.from_dict({"inner": {"wieght": 1.0}})


def test_wrong_type_names_field():
    with pytest.raises(ConfigError, match=r"Outer.steps: expected an integer, got str"):
        Outer.from_dict({"steps": "3"})
    with pytest.raises(ConfigError, match=r"Outer.pairs\[1\].weight: expected a number"):
        Outer.from_dict({"pairs": [{"name": "a"}, {"weight": "heavy"}]})


def test_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"criterion='l3' is not allowed.*'l1', 'l2', 'fpgm'"):
        Outer(criterion="l3")


def test_validate_runs():
    with pytest.raises(ConfigError, match=r"ratio=1.0 is outside \[0.0, 1.0\)"):
        Outer(ratio=1.0)
    with pytest.raises(ConfigError, match="Outer.ratio: expected a finite number"):
        Outer(ratio=float("nan"))


@pytest.mark.parametrize(
    "value, message",
    [
        (float("inf"), "finite"),
        (float("-inf"), "finite"),
        (10**400, "finite"),  # float(10**400) overflows
    ],
    ids=["inf", "-inf", "400-digit-int"],
)
def test_non_finite_floats_name_the_key(value, message):
    with pytest.raises(ConfigError, match=f"Outer.ratio: expected a {message}"):
        Outer.from_dict({"ratio": value})


def test_huge_int_names_the_key():
    with pytest.raises(ConfigError, match="Outer.steps: .* does not fit in a 64-bit integer"):
        Outer.from_dict({"steps": 10**400})


@pytest.mark.parametrize("data", [[], "", 0, False, "ratio: 0.5"], ids=["list", "empty-str", "zero", "false", "str"])
def test_from_dict_refuses_non_mappings(data):
    with pytest.raises(ConfigError, match="expected a mapping"):
        Outer.from_dict(data)


def test_from_dict_none_gives_defaults():
    assert Outer.from_dict(None) == Outer()


def test_hostile_yaml_is_refused_quickly(tmp_path):
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        bomb += f"{name}: &{name} [" + ",".join(["*" + prev] * 9) + "]\n"
        prev = name
    with pytest.raises(ConfigError, match="once aliases are expanded"):
        load_yaml(bomb)
    with pytest.raises(ConfigError, match="contains itself"):
        load_yaml("a: &x [*x]\n")
    with pytest.raises(ConfigError, match="more than 20,000 values"):
        load_yaml("stages:\n" + "  - ptq: {calibrator: kl}\n" * 20000)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="limited to"):
        load_yaml(big)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(latin1)


def test_malformed_yaml_gives_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ratio: 0.5\ncriterion: [l1\nsteps: 2\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml at line \d+"):
        load_yaml(path)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Outer.from_yaml(tmp_path / "nope.yaml")


def test_yaml_safe_loader_refuses_python_objects():
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_yaml("a: !!python/object/apply:os.system ['echo hi']\n")


def test_non_mapping_top_level():
    with pytest.raises(ConfigError, match="expected a mapping"):
        Outer.from_dict([1, 2])  # type: ignore[arg-type]


def test_optional_nested_error_is_precise():
    @dataclass(frozen=True)
    class Holder(SlimConfig):
        inner: Inner | None = None

    with pytest.raises(ConfigError, match=r"Holder.inner: unknown key 'nme'; did you mean 'name'"):
        Holder.from_dict({"inner": {"nme": "x"}})
    assert Holder.from_dict({"inner": None}).inner is None


@dataclass(frozen=True)
class AbcTyped(SlimConfig):
    names: Sequence[str] = ()
    sizes: Mapping[str, int] | None = None


def test_abc_sequence_and_mapping_are_checked():
    # get_origin(Sequence[str]) is collections.abc.Sequence: such fields used to pass unchecked
    with pytest.raises(ConfigError, match=r"AbcTyped.names\[1\]: expected a string"):
        AbcTyped(names=["a", 3])
    with pytest.raises(ConfigError, match="AbcTyped.sizes.k: expected an integer"):
        AbcTyped(sizes={"k": "v"})
    cfg = AbcTyped(names=["a", "b"], sizes={"k": 1})
    assert cfg.names == ("a", "b") and hash(cfg.names)  # stays hashable in a frozen config
    assert AbcTyped.from_dict(cfg.to_dict()) == cfg
