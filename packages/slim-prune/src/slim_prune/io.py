"""Save and load pruned models without pickling the Layer object.

A pruned model is written as a directory holding ``prune_spec.json`` (every
layer's parameter shapes and shape attributes) and ``weights.npz`` (the state
dict as plain arrays, no pickle). :func:`load_pruned` builds the original
architecture with ``build_fn``, shrinks each layer to the recorded shapes, then
loads the weights.

Example:
    >>> save_pruned(model, "out/pruned")                                            # doctest: +SKIP
    >>> model2 = load_pruned(lambda: paddle.vision.models.resnet18(), "out/pruned")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from slim_core import ModelLoadError, atomic_dir, require_paddle
from slim_prune.layers import handler_for, set_param_value
from slim_prune.prune import model_spec

__all__ = ["save_pruned", "load_pruned", "SPEC_FILE", "WEIGHTS_FILE"]

SPEC_FILE = "prune_spec.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1


def save_pruned(model: Any, path: str | os.PathLike[str], *, overwrite: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s pruned architecture spec and weights into directory ``path`` (atomically).

    Args:
        model: the pruned Layer.
        path: output directory.
        overwrite: replace an existing directory.
        extra: JSON-serializable metadata stored in the spec (e.g. ``PruneResult.to_dict()``).

    Returns:
        The directory path.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    state = {k: np.asarray(v.numpy()) for k, v in model.state_dict().items()}
    spec = {"format": "slim-prune", "version": FORMAT_VERSION, "model_type": type(model).__name__, "layers": model_spec(model)}
    if extra:
        spec["extra"] = extra
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=1), encoding="utf-8")
        with open(tmp / WEIGHTS_FILE, "wb") as fh:
            np.savez(fh, **state)
    return Path(path)


def _shrink_layer(name: str, layer: Any, entry: dict[str, Any]) -> None:
    for pname, shape in entry.get("params", {}).items():
        p = getattr(layer, pname, None)
        if p is None:
            raise ModelLoadError(f"layer {name!r} of the rebuilt model has no parameter {pname!r} recorded in the spec")
        cur = [int(s) for s in p.shape]
        if cur == list(shape):
            continue
        if len(cur) != len(shape) or any(s > c for s, c in zip(shape, cur)):
            raise ModelLoadError(f"spec shape {shape} of {name}.{pname} does not fit the rebuilt shape {cur}: wrong build_fn?")
        index = tuple(slice(0, s) for s in shape)
        set_param_value(p, np.asarray(p.numpy())[index])
    h = handler_for(layer, required=False)
    if h is not None:
        h.sync(layer)
    for attr, value in entry.get("attrs", {}).items():
        setattr(layer, attr, value)


def load_pruned(build_fn: Callable[[], Any], path: str | os.PathLike[str]) -> Any:
    """Rebuild a pruned model saved by :func:`save_pruned`.

    Args:
        build_fn: returns the original (unpruned) architecture, e.g. ``lambda: resnet18(num_classes=10)``.
        path: the directory written by :func:`save_pruned`.

    Returns:
        The pruned Layer with its weights, in eval mode.

    Raises:
        ModelLoadError: missing/corrupt files, or a spec that does not match ``build_fn``'s model.
    """
    require_paddle()
    p = Path(path)
    spec_file, weights_file = p / SPEC_FILE, p / WEIGHTS_FILE
    for f in (spec_file, weights_file):
        if not f.is_file():
            raise ModelLoadError(f"pruned model file not found: {f}")
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        layers = spec["layers"]
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"{spec_file} is not a slim-prune spec: {exc}") from exc
    model = build_fn()
    subs = dict(model.named_sublayers(include_self=True))
    for name, entry in layers.items():
        if name not in subs:
            raise ModelLoadError(f"the spec names layer {name!r}, which the model from build_fn does not have")
        _shrink_layer(name, subs[name], entry)
    try:
        with np.load(weights_file, allow_pickle=False) as data:
            state = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ModelLoadError(f"cannot read weights {weights_file}: {exc}") from exc
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ModelLoadError(f"{weights_file} lacks weights for {missing[0]!r} (and {len(missing) - 1} more)")
    for k, t in own.items():
        if list(t.shape) != list(state[k].shape):
            raise ModelLoadError(
                f"weight {k!r} has shape {list(state[k].shape)} in {weights_file} but {list(t.shape)} in the rebuilt model"
            )
        set_param_value(t, state[k])
    model.eval()
    return model
