"""Capture intermediate tensors of a model with forward hooks, by sublayer path.

Nothing is patched globally: a post-forward hook is registered on each watched
sublayer, and it only records while its :class:`FeatureRecorder` is recording
(inside a :class:`~slim_distill.Distiller` forward), so using the model on its
own afterwards costs nothing and keeps no tensors alive.

Example:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.ReLU())
    >>> rec = FeatureRecorder(net, "student")
    >>> rec.watch("0")
    >>> with rec.recording():
    ...     _ = net(paddle.ones([2, 4]))
    >>> list(rec.get("0").shape)
    [2, 8]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from slim_distill.errors import DistillError, LayerNotFoundError

__all__ = ["FeatureRecorder", "match_pattern", "select_output"]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate a layer pattern: ``*`` within one segment, ``**`` across segments, ``?``, ``[...]``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append(r"[^.]*")
            i += 1
        elif c == "?":
            out.append(r"[^.]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match_pattern(pattern: str, names: list[str]) -> list[str]:
    """Names (in the given order) that ``pattern`` matches in full."""
    rx = _pattern_regex(pattern)
    return [n for n in names if rx.match(n)]


def _close_names(name: str, names: list[str], n: int = 5) -> list[str]:
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    if not close:  # a prefix or suffix often helps more than edit distance for dotted paths
        tail = name.split(".")[-1]
        close = [c for c in names if c.endswith("." + tail) or c == tail][:n]
    return close


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "stop_gradient")


def select_output(value: Any, index: int | None, what: str) -> Any:
    """Pick one tensor out of a layer's output or input tuple."""
    if isinstance(value, (tuple, list)):
        if index is None:
            if len(value) == 1:
                return select_output(value[0], None, what)
            raise DistillError(f"{what} is a tuple of {len(value)} values; set its index (0..{len(value) - 1})")
        if not -len(value) <= index < len(value):
            raise DistillError(f"{what}: index {index} is out of range for a tuple of {len(value)} values")
        return select_output(value[index], None, what)
    if isinstance(value, dict):
        raise DistillError(f"{what} is a dict (keys {', '.join(map(str, value))}); hook a sublayer that returns a tensor")
    if index not in (None, 0, -1):
        raise DistillError(f"{what} is a single tensor; index {index} does not apply (remove it)")
    if not _is_tensor(value):
        raise DistillError(f"{what} is a {type(value).__name__}, not a tensor")
    return value


class FeatureRecorder:
    """Forward hooks on named sublayers of one model.

    Args:
        model: the ``paddle.nn.Layer`` to watch.
        side: ``"student"``, ``"teacher"``, ... (used in messages).
    """

    def __init__(self, model: Any, side: str) -> None:
        self.model = model
        self.side = side
        # every path, aliases included: a layer registered under two names answers to both
        self.layers: dict[str, Any] = dict(model.named_sublayers(remove_duplicate=False))
        self.names = list(self.layers)
        self._handles: dict[int, Any] = {}
        self._calls: dict[int, list[tuple[Any, Any]]] = {}
        self._active = False

    # name resolution ---------------------------------------------------------
    def resolve(self, name: str) -> Any:
        """The sublayer at ``name``; LayerNotFoundError lists close names."""
        if name in self.layers:
            return self.layers[name]
        close = _close_names(name, self.names)
        hint = f"; close names: {', '.join(repr(c) for c in close)}" if close else ""
        some = ", ".join(repr(n) for n in self.names[:12]) + (" ..." if len(self.names) > 12 else "")
        raise LayerNotFoundError(
            f"the {self.side} ({type(self.model).__name__}) has no sublayer {name!r}{hint}. "
            f"It has {len(self.names)} sublayers, for example {some}; see model.named_sublayers()"
        )

    def expand(self, pattern: str) -> list[str]:
        """Paths a pattern matches, in model order; LayerNotFoundError when none."""
        found = match_pattern(pattern, list(dict(self.model.named_sublayers())))  # no aliases: each layer once
        if not found:
            raise LayerNotFoundError(
                f"pattern {pattern!r} matches no sublayer of the {self.side} ({type(self.model).__name__}); "
                f"'*' stays within one dotted segment, '**' crosses segments. Top-level sublayers: "
                + ", ".join(repr(n) for n in self.names if "." not in n)
            )
        return found

    # hooks -------------------------------------------------------------------
    def watch(self, name: str) -> None:
        """Register (once per layer object) the recording hook on ``name``."""
        layer = self.resolve(name)
        key = id(layer)
        if key not in self._handles:

            def hook(_layer: Any, inputs: Any, output: Any, key: int = key) -> None:
                if self._active:
                    self._calls.setdefault(key, []).append((inputs, output))

            self._handles[key] = layer.register_forward_post_hook(hook)

    def remove(self) -> None:
        """Remove every hook this recorder registered."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self._calls.clear()

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record calls inside the block; earlier records are dropped on entry."""
        self._calls = {}
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def clear(self) -> None:
        """Drop recorded tensors (frees the memory they hold)."""
        self._calls = {}

    def num_calls(self, name: str) -> int:
        """How often the layer at ``name`` ran during the last recording."""
        return len(self._calls.get(id(self.resolve(name)), []))

    def get(self, name: str, io: str = "output", index: int | None = None, call: int | None = None) -> Any:
        """The recorded tensor of ``name``.

        Args:
            name: sublayer path.
            io: ``"output"`` or ``"input"``.
            index: item of a tuple output, or which positional input (default the only one).
            call: which call when the layer ran several times (None: it must have run once).
        """
        calls = self._calls.get(id(self.resolve(name)), [])
        what = f"{self.side} layer {name!r}"
        if not calls:
            raise DistillError(f"{what} did not run in the last forward (is it on the path the model took, or watched before the forward?)")
        if call is None:
            if len(calls) > 1:
                raise DistillError(
                    f"{what} ran {len(calls)} times in one forward (a shared layer); set {self.side}_call to pick one (0..{len(calls) - 1})"
                )
            call = 0
        if not -len(calls) <= call < len(calls):
            raise DistillError(f"{what}: call {call} is out of range, it ran {len(calls)} time(s)")
        inputs, output = calls[call]
        value = inputs if io == "input" else output
        return select_output(value, index, f"{what} {io}")
