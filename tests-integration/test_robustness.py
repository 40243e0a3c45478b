"""Hostile-but-fair input: generated configs, hostile YAML, corrupt model files, bad data, relative paths.

- Every config class gets generated dicts (Hypothesis, derandomized so CI is deterministic):
  each is either accepted, with only finite floats and 64-bit ints, or refused with a
  ConfigError; any other exception fails.
- Hostile YAML (alias bomb, self-reference, non-UTF-8, 20,000 stages) is refused quickly.
- Corrupt, truncated, swapped and missing model files are tried on every loader and on
  Predictor with both backends, in a child process, so a crash of the runtime fails
  the case instead of killing the suite. No case may run silently.
- Wrong input shapes or dtypes give a DataError naming the input.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("SLIM_QUIET", "1")

import paddle  # noqa: E402

from slim_auto.act import ACT_KEYS as ACT_SECTION_NAMES  # noqa: E402
from slim_core import ConfigError, DataError, SlimConfig, load_yaml  # noqa: E402
from slim_core.config import MAX_INT  # noqa: E402
from slim_core.demo import build_tiny_cnn  # noqa: E402
from slim_core.testing import paddle_static_ptq  # noqa: E402

# deterministic and moderate: the suite must stay fast and give the same verdict on every run
CONFIG_SETTINGS = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ generated configs
CONFIG_MODULES = [
    "slim_analysis.latency",
    "slim_prune.config",
    "slim_prune.sparsity",
    "slim_prune.transformer",
    "slim_quant.config",
    "slim_quant.qat.config",
    "slim_quant.weight_only.config",
    "slim_distill.config",
    "slim_nas.darts",
    "slim_nas.ofa.train",
    "slim_deploy.rep",
    "slim_auto.recipe",
]


def _config_classes() -> list[type[SlimConfig]]:
    for mod in CONFIG_MODULES:
        importlib.import_module(mod)
    seen: list[type[SlimConfig]] = []
    stack = list(SlimConfig.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls not in seen and cls.__module__.startswith("slim_") and dataclasses.is_dataclass(cls):
            seen.append(cls)
    return sorted(seen, key=lambda c: f"{c.__module__}.{c.__name__}")


CONFIG_CLASSES = _config_classes()

# values a hand-edited or generated file can hold: wrong types, huge and non-finite numbers, odd strings
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
    st.text(max_size=8),
    st.sampled_from(["", "kl", "l1", "abs_max", "maybe", "yes", "1e3", "\x00", "é"]),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-2, 2), max_size=2),
)


def _typed(tp: typing.Any, depth: int = 0) -> st.SearchStrategy[typing.Any]:
    """Values of the annotated type (to get past the type checks into ``validate``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return st.one_of([_typed(a, depth) for a in args])
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.one_of(st.integers(-3, 300), st.integers())
    if tp is float:
        return st.one_of(st.floats(-2, 2), st.floats(allow_nan=True, allow_infinity=True))
    if tp is str:
        return st.one_of(st.sampled_from(["", "kl", "mse", "l1", "fpgm", "abs_max", "percentile", "conv1", "fc"]), st.text(max_size=6))
    if origin in (list, tuple, typing.Sequence, __import__("collections.abc").abc.Sequence):
        item = args[0] if args and args[-1] is not Ellipsis or (args and len(args) == 2) else typing.Any
        return st.lists(_typed(item, depth + 1) if depth < 2 else HOSTILE, max_size=3)
    if origin in (dict, typing.Mapping, __import__("collections.abc").abc.Mapping):
        value = args[1] if len(args) == 2 else typing.Any
        return st.dictionaries(st.text(max_size=6), _typed(value, depth + 1) if depth < 2 else HOSTILE, max_size=2)
    if isinstance(tp, type) and issubclass(tp, SlimConfig) and depth < 2:
        return _config_dicts(tp, depth + 1)
    return HOSTILE


def _config_dicts(cls: type[SlimConfig], depth: int = 0) -> st.SearchStrategy[dict[str, typing.Any]]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints.get(f.name, typing.Any) for f in dataclasses.fields(cls) if f.init}
    per_field = {name: st.one_of(_typed(tp, depth), HOSTILE) for name, tp in fields.items()}
    known = st.fixed_dictionaries({}, optional=per_field)
    unknown = st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k not in fields), HOSTILE, max_size=1)
    return st.one_of(known, st.builds(lambda a, b: {**a, **b}, known, unknown))


def _check_accepted(value: typing.Any, where: str) -> None:
    """What an accepted config may hold: finite floats and 64-bit ints, all the way down."""
    if isinstance(value, SlimConfig):
        for f in dataclasses.fields(value):
            _check_accepted(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where}={value!r} was accepted"
    elif isinstance(value, int) and not isinstance(value, bool):
        assert -MAX_INT - 1 <= value <= MAX_INT, f"{where}={value!r} was accepted"
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_accepted(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_accepted(v, f"{where}.{k}")


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=[c.__name__ for c in CONFIG_CLASSES])
def test_generated_configs_are_accepted_or_refused_clearly(cls):
    @CONFIG_SETTINGS
    @given(data=_config_dicts(cls))
    def check(data):
        try:
            cfg = cls.from_dict(data)
        except ConfigError:
            return  # refused with slim's error: the documented outcome for an invalid value
        _check_accepted(cfg, cls.__name__)
        assert cls.from_dict(cfg.to_dict()) == cfg  # an accepted config round-trips

    check()


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=[c.__name__ for c in CONFIG_CLASSES])
@pytest.mark.parametrize("data", [[], "", 0, False, "a: 1", [{"a": 1}]], ids=["list", "empty-str", "zero", "false", "str", "list-of-dict"])
def test_non_mapping_input_is_a_config_error(cls, data):
    with pytest.raises(ConfigError, match="expected a mapping"):
        cls.from_dict(data)


# ------------------------------------------------------------------ hostile YAML and recipes
def _alias_bomb(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        text += f"{name}: &{name} [" + ",".join(["*" + prev] * 9) + "]\n"
        prev = name
    return text


HOSTILE_FILES = {
    "alias-bomb": _alias_bomb().encode(),
    "self-reference": b"stages: &s [*s]\n",
    "non-utf8": "stages:\n  - ptq: {calibrator: kl}\n# caf\xe9\n".encode("latin-1"),
    "20000-stages": ("stages:\n" + "  - ptq: {calibrator: kl}\n" * 20000).encode(),
    "2-MB": b"# pad\n" * 350_000,
    "deep-nesting": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
}


# each is refused by a bound checked before the document is expanded or validated
HOSTILE_MESSAGES = {
    "alias-bomb": "once aliases are expanded",
    "self-reference": "contains itself",
    "non-utf8": "not UTF-8",
    "20000-stages": "more than 20,000 values",
    "2-MB": "limited to 1,048,576 bytes",
    "deep-nesting": "nested too deeply|more than",
}


@pytest.mark.parametrize("name", list(HOSTILE_FILES), ids=list(HOSTILE_FILES))
def test_hostile_yaml_is_refused_early(tmp_path, monkeypatch, name):
    import slim_auto

    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_bytes(HOSTILE_FILES[name])
    for load in (load_yaml, slim_auto.load_recipe, slim_auto.load_any_recipe, slim_auto.translate_act):
        with pytest.raises(ConfigError, match=HOSTILE_MESSAGES[name]):
            load("recipe.yaml")  # a relative path, as a user types it


ACT_SECTIONS = list(ACT_SECTION_NAMES)
ACT_KEYS = ["weight_quantize_type", "use_pact", "algo", "hist_percent", "batch_nums", "pruned_ratio", "criterion", "alpha", "loss",
            "epochs", "learning_rate", "ptq_algo", "max_quant_count", "target_metric", "ratio", "moving_rate", "bias_correct"]  # fmt: skip


@CONFIG_SETTINGS
@given(
    recipe=st.dictionaries(
        st.sampled_from(ACT_SECTIONS),
        st.one_of(st.none(), st.dictionaries(st.sampled_from(ACT_KEYS), st.one_of(HOSTILE, st.lists(HOSTILE, max_size=2)), max_size=4)),
        min_size=1,
        max_size=4,
    )
)
def test_generated_act_recipes_translate_or_are_refused(recipe):
    from slim_auto import translate_act

    try:
        t = translate_act(recipe)
    except ConfigError:
        return
    listed = "\n".join(t.mapped + t.unsupported)
    for section, body in recipe.items():
        assert section in listed, f"section {section} ({body!r}) was dropped without being listed"
    for stage in t.recipe.stages:
        _check_accepted(stage.settings, stage.kind)


def test_act_values_are_never_invented():
    from slim_auto import translate_act

    with pytest.raises(ConfigError, match="QuantAware.use_pact='maybe'"):
        translate_act({"QuantAware": {"use_pact": "maybe"}})
    t = translate_act({"QuantPost": {"weight_quantize_type": "foo"}})
    assert "weight_granularity" not in t.recipe.stages[0].settings
    t = translate_act({"QuantAware": {"weight_quantize_type": "channel_wise_abs_max"}})
    assert t.recipe.stages[0].settings["weight_quanter"] == "abs_max"  # a real QATConfig field


# ------------------------------------------------------------------ corrupt model files
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny CNN exported in every format, an INT8 legacy model (Paddle's static PTQ) and a different model."""
    import slim_deploy
    from slim_core.demo import load_digits

    root = tmp_path_factory.mktemp("robust-models")
    paddle.seed(0)
    model = build_tiny_cnn(width=8)
    model.eval()
    slim_deploy.export(model, root / "fp32", [None, 1, 8, 8], format=["paddle", "paddle-legacy", "onnx"])
    other = build_tiny_cnn(width=4)
    other.eval()
    slim_deploy.export(other, root / "other", [None, 1, 8, 8], format=["paddle", "paddle-legacy"])
    x, _ = load_digits("test")
    x = x[:32]
    paddle_static_ptq(root / "fp32", root / "int8", [x[:16], x[16:32]])
    slim_deploy.write_manifest(root / "int8", [{"name": "x", "shape": [-1, 1, 8, 8], "dtype": "float32"}])
    np.save(root / "x.npy", x[:2])
    return root


# (directory, file to damage, what runs it)
TARGETS = [
    ("fp32", "model.json", "predictor-paddle"),
    ("fp32", "model.pdiparams", "predictor-paddle"),
    ("fp32", "model_legacy.pdmodel", "predictor-legacy"),
    ("fp32", "model_legacy.pdiparams", "predictor-legacy"),
    ("fp32", "model.onnx", "predictor-onnxruntime"),
    ("fp32", "model.pdiparams", "predictor-onnxruntime"),  # a Paddle model converted for ONNX Runtime
    ("int8", "model_legacy.pdmodel", "predictor-int8"),
    ("int8", "model_legacy.pdiparams", "predictor-int8"),
    ("fp32", "model.json", "load_inference_model"),
    ("fp32", "model.pdiparams", "load_inference_model"),
    ("fp32", "model_legacy.pdmodel", "load_inference_model"),
    ("int8", "model_legacy.pdmodel", "load_inference_model"),
    ("int8", "model_legacy.pdiparams", "load_inference_model"),
    ("fp32", "model.json", "model_size"),
    ("fp32", "model_legacy.pdiparams", "model_size"),
    ("int8", "model_legacy.pdmodel", "model_size"),
    ("fp32", "model.pdiparams", "latency"),
    ("fp32", "model_legacy.pdmodel", "latency"),
]
DAMAGE = ["truncate-8", "half", "random", "empty", "missing", "trailing-bytes", "swapped", "bit-flip"]
MANIFEST_DAMAGE = ["truncate-8", "missing", "swapped", "bit-flip"]  # with slim.json every file is hashed before anything else
CASES = [(d, f, runner, damage, False) for d, f, runner in TARGETS for damage in DAMAGE]
CASES += [(d, f, runner, damage, True) for d, f, runner in TARGETS if runner.startswith("predictor") for damage in MANIFEST_DAMAGE]
# Documented: without slim.json a flipped bit inside a weight is indistinguishable from a real weight (only the
# manifest's SHA-256 sees it), and a flipped bit in a program's text may leave a valid program; such a case may run.
ACCEPTED = {c for c in CASES if c[3] == "bit-flip" and not c[4]}


def _case_id(case) -> str:
    d, f, runner, damage, manifest = case
    return f"{runner}-{d}-{f}-{damage}-{'manifest' if manifest else 'bare'}"


CHILD = textwrap.dedent(
    r"""
    import json, os, shutil, sys
    import numpy as np
    from slim_core import SlimError

    root, cases = sys.argv[1], json.loads(sys.argv[2])
    x = np.load(os.path.join(root, "x.npy"))

    def damage(path, kind, other):
        data = open(path, "rb").read()
        if kind == "truncate-8": data = data[:-8]
        elif kind == "half": data = data[: len(data) // 2]
        elif kind == "random": data = np.random.default_rng(0).bytes(len(data))
        elif kind == "empty": data = b""
        elif kind == "trailing-bytes": data = data + b"\0" * 8
        elif kind == "swapped": data = open(other, "rb").read()
        elif kind == "bit-flip":
            data = bytearray(data); data[len(data) * 3 // 4] ^= 0x40; data = bytes(data)
        if kind == "missing": os.remove(path)
        else: open(path, "wb").write(data)

    def run(runner, path):
        if runner.startswith("predictor"):
            from slim_deploy import Predictor
            backend = {"predictor-onnxruntime": "onnxruntime"}.get(runner, "paddle")
            kwargs = {"format": "paddle-legacy"} if runner == "predictor-legacy" and os.path.isdir(path) else {}
            return Predictor(path, backend=backend, threads=1, **kwargs)(x)
        if runner == "load_inference_model":
            from slim_core import load_inference_model
            return load_inference_model(path).run([x])
        if runner == "latency":
            from slim_analysis import latency
            return latency(path, [1, 1, 8, 8], repeats=1, warmup=0)
        from slim_analysis import model_size
        return model_size(path)

    for case in cases:
        d, fname, runner, kind, manifest = case
        print("START", json.dumps(case), flush=True)
        work = os.path.join(os.getcwd(), "work")  # relative paths below: the user's view
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(os.path.join(root, d), work)
        other = os.path.join(root, "other", fname) if os.path.exists(os.path.join(root, "other", fname)) else os.path.join(root, "fp32", "model.pdiparams")
        damage(os.path.join(work, fname), kind, other)
        if manifest:
            path = "work"
        else:
            os.remove(os.path.join(work, "slim.json"))
            path = "work/model.onnx" if fname.endswith(".onnx") else "work/" + fname.rsplit(".", 1)[0]
            if runner == "predictor-onnxruntime" and not fname.endswith(".onnx"):
                path = "work/model"
        try:
            run(runner, path)
            outcome = "ran"
        except SlimError as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
        except Exception as exc:
            outcome = f"RAW {type(exc).__name__}: {str(exc)[:200]}"
        print("RESULT", json.dumps({"case": case, "outcome": outcome}), flush=True)
    """
)


@pytest.fixture(scope="module")
def corrupt_outcomes(models, tmp_path_factory):
    """Run every case in child processes; a crash records the case and the next child goes on after it."""
    cwd = tmp_path_factory.mktemp("corrupt-cwd")
    todo = [list(c) for c in CASES]
    outcomes: dict[str, str] = {}
    while todo:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(models), json.dumps(todo)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "OMP_NUM_THREADS": "1", "SLIM_QUIET": "1"},
        )
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = tuple(json.loads(line[6:]))
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
                outcomes[_case_id(tuple(result["case"]))] = result["outcome"]
        done = [c for c in todo if _case_id(tuple(c)) in outcomes]
        rest = [c for c in todo if _case_id(tuple(c)) not in outcomes]
        if proc.returncode != 0 and started is not None and _case_id(started) not in outcomes:
            outcomes[_case_id(started)] = (
                f"CRASH exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else ''}"
            )
            rest = [c for c in rest if tuple(c) != started]
        elif not done:
            pytest.fail(f"the child process made no progress (exit {proc.returncode}): {proc.stderr[-2000:]}")
        todo = rest
    return outcomes


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_corrupt_model_files_never_run_silently_or_crash(corrupt_outcomes, case):
    outcome = corrupt_outcomes[_case_id(case)]
    if case in ACCEPTED and case[1].endswith(".pdmodel") and outcome.startswith("CRASH"):
        # Known limit: one flipped bit can leave a legacy program that parses and passes every structural
        # check but whose changed attribute crashes Paddle's C++ (seen once for an INT8 program, depending on
        # where the fixed flip position lands in that build's file). Only slim.json's SHA-256 catches it:
        # the same damage with a manifest is a ModelLoadError (the "-manifest" cases).
        pytest.xfail(f"bit flip in a bare legacy program crashed Paddle: {outcome}")
    assert not outcome.startswith(("CRASH", "RAW")), outcome
    if case in ACCEPTED:
        return  # documented: see ACCEPTED
    assert outcome != "ran", "a damaged model ran without an error"
    assert outcome.startswith("ModelLoadError"), outcome


# ------------------------------------------------------------------ bad data
@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((2, 3, 8, 8), "float32"), r"input 'x' \(shape \[2, 3, 8, 8\], float32\)"),
        (np.zeros((2, 8, 8), "float32"), r"input 'x' \(shape \[2, 8, 8\], float32\)"),
        (np.zeros((2, 1, 8, 8), "int64"), r"input 'x' \(shape \[2, 1, 8, 8\], int64\)"),
    ],
    ids=["channels", "rank", "int64"],
)
def test_wrong_shape_or_dtype_is_a_data_error_naming_the_input(bad, words):
    import slim_prune

    with pytest.raises(DataError, match=words):
        slim_prune.prune_(build_tiny_cnn(width=8), slim_prune.PruneConfig(ratio=0.5), example_inputs=bad)


def test_calibration_data_of_the_wrong_shape_is_a_data_error():
    import slim_quant

    paddle.seed(0)
    # refused at the trace (input shape) or at the first calibration forward (input 'x'), before the model changes
    with pytest.raises(
        DataError, match=r"(input shape \[\[-1, 3, 8, 8\]\]|input 'x' \(shape \[4, 3, 8, 8\], float32\)).*expected shape \[N, 1, H, W\]"
    ):
        slim_quant.quantize_(build_tiny_cnn(width=8), slim_quant.PTQConfig(calib_batches=1), calib_data=[np.zeros((4, 3, 8, 8), "float32")])


# ------------------------------------------------------------------ relative paths
def test_relative_paths_behave_like_absolute_ones(tmp_path, monkeypatch):
    import slim_analysis
    import slim_deploy
    from slim_core import load_inference_model

    monkeypatch.chdir(tmp_path)
    paddle.seed(0)
    model = build_tiny_cnn(width=8)
    model.eval()
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype("float32")
    slim_deploy.export(model, "out/rel", [None, 1, 8, 8], format=["paddle", "onnx"])
    slim_deploy.export(model, tmp_path / "out" / "abs", [None, 1, 8, 8], format=["paddle", "onnx"])
    for backend in ("paddle", "onnxruntime"):
        rel = slim_deploy.Predictor("out/rel", backend=backend, threads=1)(x)
        ab = slim_deploy.Predictor(tmp_path / "out" / "abs", backend=backend, threads=1)(x)
        np.testing.assert_allclose(rel, ab, rtol=1e-5, atol=1e-6)
    rel_size, abs_size = slim_analysis.model_size("out/rel/model"), slim_analysis.model_size(tmp_path / "out" / "abs" / "model")
    assert (
        rel_size.params_file_bytes == abs_size.params_file_bytes and rel_size.by_dtype == abs_size.by_dtype
    )  # program text holds unique names
    np.testing.assert_allclose(load_inference_model("out/rel").run([x])[0], load_inference_model(tmp_path / "out" / "abs").run([x])[0])
    Path("out/rel/model.pdiparams").write_bytes(Path("out/rel/model.pdiparams").read_bytes()[:-8])
    from slim_core import ModelLoadError

    with pytest.raises(ModelLoadError, match="out/rel"):
        slim_deploy.Predictor("out/rel", threads=1)


def test_training_data_of_the_wrong_shape_is_a_data_error():
    import slim_distill

    paddle.seed(0)
    teacher, student = build_tiny_cnn(width=8), build_tiny_cnn(width=4)
    distiller = slim_distill.Distiller(student, teacher, slim_distill.DistillConfig(logits={}))
    data = [(np.zeros((4, 3, 8, 8), "float32"), np.zeros((4,), "int64"))]
    with pytest.raises(DataError, match=r"input 'x' \(shape \[4, 3, 8, 8\], float32\) in training batch 0"):
        slim_distill.fit(distiller, data, epochs=1, optimizer=paddle.optimizer.SGD(parameters=student.parameters()))


@pytest.mark.parametrize("target", ["int8/model_legacy.pdmodel", "fp32/model.pdiparams"], ids=["int8-program", "fp32-params"])
def test_slim_run_on_a_damaged_model_exits_with_a_clear_error(models, tmp_path, target):
    d, name = target.split("/")
    shutil.copytree(models / d, tmp_path / "m")
    damaged = tmp_path / "m" / name
    damaged.write_bytes(np.random.default_rng(1).bytes(damaged.stat().st_size))
    proc = subprocess.run(
        [sys.executable, "-m", "slim_core.cli", "run", "m", "--input", str(models / "x.npy")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "SLIM_QUIET": "1"},
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # not 139 (SIGSEGV), not 0
    assert f"{name} does not match" in proc.stderr and "Traceback" not in proc.stderr


def test_a_recipe_with_too_many_stages_is_refused_before_any_is_checked(tmp_path, monkeypatch):
    import slim_auto

    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_text("stages: [" + ", ".join(["ptq"] * 5000) + "]\n")  # 5,000 values: within the YAML bound
    for load in (slim_auto.load_recipe, slim_auto.load_any_recipe):
        with pytest.raises(ConfigError, match="5,000 stages; a recipe holds at most 64"):
            load("recipe.yaml")
