"""The run store: what a compression run keeps on disk, and the rules that keep it safe.

The output directory is slim's only when it holds slim's marker file
(``.slim-auto.json``): a new or empty directory becomes slim's, a non-empty
directory without the marker is refused unless ``overwrite`` is given, and slim
deletes or replaces only what it wrote there (``checkpoints/``, ``model/``, the
reports). A lock file (``.slim-auto.lock``, ``flock``) makes a second run on the
same directory fail at once instead of overwriting the first one's results.

Checkpoints are JSON (``checkpoints/state.json``: plans and candidates) and
``.npz`` weight files read with ``allow_pickle=False``: resuming never executes
anything stored in the directory.

Example:
    >>> store = RunStore("slim-out", resume=True, overwrite=False)   # doctest: +SKIP
    >>> store.check(need_bytes=10_000_000)                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from slim_auto.__about__ import __version__
from slim_core import OutputExistsError, SlimError, atomic_dir, atomic_write, require_paddle

__all__ = ["RunStore", "MARKER", "LOCK", "CHECKPOINTS"]

MARKER = ".slim-auto.json"
LOCK = ".slim-auto.lock"
CHECKPOINTS = "checkpoints"
_STATE = "state.json"


class RunStore:
    """The output directory of one run: ownership, lock, state, weight checkpoints, delivery.

    Args:
        out_dir: the output directory (made absolute, so later working-directory changes
            and libraries that link temporary files behave as with an absolute path).
        resume: continue from checkpoints that match the run.
        overwrite: allow writing into a directory slim did not create, and replacing an
            earlier run's results or checkpoints.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, resume: bool = True, overwrite: bool = False) -> None:
        self.out_dir = Path(os.path.abspath(os.fspath(out_dir)))
        self.resume = resume
        self.overwrite = overwrite
        self._lock_fh: Any = None

    # ------------------------------------------------------------------ paths
    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / CHECKPOINTS

    def candidate_rel(self, cid: int, label: str = "") -> str:
        """The directory of candidate ``cid``, relative to the output directory."""
        return f"{CHECKPOINTS}/cand-{cid:03d}" + (f"-{label}" if label else "")

    def work_dir(self, plan: int, stage: int) -> Path:
        """Scratch directory of a stage (trial models live here until the stage ends)."""
        return self.ckpt_dir / f"work-p{plan}-s{stage}"

    # ------------------------------------------------------------------ ownership and lock
    def owned(self) -> bool:
        """Whether the directory carries slim's marker."""
        return (self.out_dir / MARKER).is_file()

    def check(self, need_bytes: int) -> None:
        """Before any work: the directory is usable, ours (or ``overwrite``), free of another run, with disk space.

        Raises:
            OutputExistsError: not a directory, not slim's and not empty, an earlier run's results
                or checkpoints without ``resume``/``overwrite``, or another run holds the lock.
            SlimError: not writable, or too little free disk.
        """
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a directory")
        if out.is_dir() and not self.owned() and any(out.iterdir()) and not self.overwrite:
            raise OutputExistsError(
                f"{out} is not empty and was not created by slim (no {MARKER} in it); slim only replaces what it wrote. "
                "Choose a new or empty directory, or pass overwrite=True (--overwrite) to let slim write into it"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SlimError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
        probe = out / ".slim-write-probe"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            raise SlimError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc
        free = shutil.disk_usage(out).free
        if free < need_bytes:
            raise SlimError(
                f"not enough free disk space in {out}: {free:,} bytes free, about {need_bytes:,} needed for checkpoints and outputs"
            )
        state = self.ckpt_dir / _STATE
        finished = (out / "metrics.json").exists() and not state.exists()
        if state.exists() and not self.resume and not self.overwrite:
            raise OutputExistsError(
                f"{out} holds checkpoints of an earlier run; pass resume=True to continue it or overwrite=True to start over"
            )
        if finished and not self.overwrite:
            raise OutputExistsError(f"{out} holds the results of a finished run; pass overwrite=True or choose another out_dir")
        self.lock()
        self.unlock()  # taken for real by open(); checked here so a busy directory fails before any work

    def lock(self) -> None:
        """Take the directory's lock.

        Raises:
            OutputExistsError: another process (or another run in this one) holds it.
        """
        if self._lock_fh is not None:
            return
        path = self.out_dir / LOCK
        fh = open(path, "a+")
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock on this platform: run unlocked
            pass
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise OutputExistsError(
                f"another slim run is writing to {self.out_dir} ({holder or 'pid unknown'}); wait for it or choose another out_dir"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._lock_fh = fh

    def unlock(self) -> None:
        """Release the lock (the lock file stays; it is slim's)."""
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing the descriptor releases the flock
            self._lock_fh = None

    def _mark(self) -> None:
        with atomic_write(self.out_dir / MARKER) as fh:
            json.dump({"created_by": "slim-auto", "version": __version__}, fh)

    # ------------------------------------------------------------------ state
    def open(self, fingerprint: str) -> dict[str, Any] | None:
        """Lock the directory, mark it as slim's and return the saved state of a matching earlier run (or None).

        A fresh start removes this run's old ``checkpoints/`` (only slim's, or with ``overwrite``).
        """
        self.lock()
        self._mark()
        data = self._load(fingerprint)
        if data is None:
            if self.ckpt_dir.exists():
                shutil.rmtree(self.ckpt_dir)
            self.ckpt_dir.mkdir(parents=True)
        return data

    def _load(self, fingerprint: str) -> dict[str, Any] | None:
        path = self.ckpt_dir / _STATE
        if not (self.resume and path.exists()):
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SlimError(f"cannot read the checkpoint state {path}: {exc}; pass overwrite=True and resume=False to start over") from exc
        if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
            if not self.overwrite:
                raise OutputExistsError(
                    f"{self.out_dir} holds checkpoints of a different run (other model, recipe or target); "
                    "pass overwrite=True to start over or choose another out_dir"
                )
            return None
        return data

    def save(self, fingerprint: str, plans: list[dict[str, Any]], candidates: list[dict[str, Any]]) -> None:
        """Write ``checkpoints/state.json`` atomically."""
        data = {"version": 2, "fingerprint": fingerprint, "plans": plans, "candidates": candidates}
        with atomic_write(self.ckpt_dir / _STATE) as fh:
            json.dump(data, fh, indent=1, default=str)

    # ------------------------------------------------------------------ weights
    def _weights_path(self, plan: int, stage: int) -> Path:
        return self.ckpt_dir / f"p{plan}-s{stage}.npz"

    def save_weights(self, layer: Any, plan: int, stage: int) -> None:
        """The Layer's state dict as ``.npz`` (no pickle)."""
        arrays = {name: np.asarray(value.numpy()) for name, value in layer.state_dict().items()}
        with atomic_write(self._weights_path(plan, stage), "wb") as fh:
            np.savez(fh, **arrays)

    def load_weights(self, layer: Any, plan: int, stage: int) -> None:
        """Load the ``.npz`` checkpoint into ``layer`` (the architecture must match).

        Raises:
            SlimError: the checkpoint is missing, unreadable or does not match.
        """
        paddle = require_paddle()
        path = self._weights_path(plan, stage)
        if not path.exists():
            raise SlimError(f"checkpoint {path} is missing; pass overwrite=True and resume=False to start over")
        try:
            with np.load(path, allow_pickle=False) as data:
                sd = {k: paddle.to_tensor(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            raise SlimError(f"checkpoint {path} cannot be read ({exc}); pass overwrite=True and resume=False to start over") from exc
        missing, unexpected = layer.set_state_dict(sd)
        if missing or unexpected:
            raise SlimError(
                f"checkpoint {path} does not match the rebuilt model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
            )

    # ------------------------------------------------------------------ delivery
    def deliver(self, model_rel: str) -> None:
        """Copy a candidate's exported model to ``out_dir/model`` (atomically)."""
        src = self.out_dir / model_rel
        with atomic_dir(self.out_dir / "model", overwrite=True) as tmp:
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)

    def clean_work(self) -> None:
        """Remove the stages' scratch directories."""
        for p in self.ckpt_dir.glob("work-*"):
            shutil.rmtree(p, ignore_errors=True)
