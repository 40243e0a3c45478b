"""Checkpoints cannot run code when read (issue 18, item 11): npz + JSON, pickles only with allow_pickle."""

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_fit import X, Y, _setup

from slim_core.errors import ModelLoadError
from slim_distill import fit, load_checkpoint


class Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "payload ran"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt")
    d, opt = _setup(1)
    fit(d, [(X[:16], Y[:16])] * 2, opt, epochs=1, checkpoint_dir=ckpt, eval_fn=lambda m: np.float32(0.5))
    return ckpt


def test_checkpoint_files_are_plain_arrays_and_json(checkpoint):
    last = checkpoint / "last"
    assert sorted(p.name for p in last.iterdir()) == ["model.npz", "optimizer.npz", "state.json"]
    meta = json.loads((last / "state.json").read_text())
    assert meta["format"] == "slim-distill-checkpoint" and meta["state"]["global_step"] == 2
    assert meta["state"]["history"][0]["metric"] == 0.5
    for name in ("model.npz", "optimizer.npz"):
        with np.load(last / name, allow_pickle=False) as data:  # raises if any member is pickled
            assert all(data[k].dtype != object for k in data.files)


def _copy(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_pickle_planted_in_the_weights_does_not_run(checkpoint, tmp_path):
    ckpt = tmp_path / "planted"
    _copy(checkpoint / "last", ckpt / "last")
    marker = tmp_path / "marker"
    with open(ckpt / "last" / "model.npz", "wb") as fh:  # an object array is stored as a pickle inside the npz
        np.savez(fh, **{"student.fc2.weight": np.array([Payload(marker)], dtype=object)})
    with pytest.raises(ModelLoadError, match="not plain arrays"):
        load_checkpoint(ckpt)
    d, opt = _setup(1)
    with pytest.raises(ModelLoadError):
        fit(d, [(X[:16], Y[:16])] * 2, opt, epochs=2, checkpoint_dir=ckpt)
    assert not marker.exists()


def test_an_old_pickled_checkpoint_needs_allow_pickle(tmp_path):
    last = tmp_path / "old" / "last"
    last.mkdir(parents=True)
    marker = tmp_path / "marker"
    for name in ("state.pkl", "model.pdparams", "optimizer.pdopt"):
        (last / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        load_checkpoint(tmp_path / "old")
    d, opt = _setup(1)
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        fit(d, [(X[:16], Y[:16])], opt, checkpoint_dir=tmp_path / "old")
    assert not marker.exists()
    # the explicit opt-in does unpickle (which is why it is an opt-in)
    load_checkpoint(tmp_path / "old", allow_pickle=True)
    assert marker.read_text() == "payload ran"


@pytest.mark.parametrize("damage", ["truncated-npz", "bad-json", "other-json"])
def test_damaged_checkpoints_are_clear_errors(checkpoint, tmp_path, damage):
    last = _copy(checkpoint / "last", tmp_path / "c" / "last")
    if damage == "truncated-npz":
        data = (last / "optimizer.npz").read_bytes()
        (last / "optimizer.npz").write_bytes(data[: len(data) // 2])
    elif damage == "bad-json":
        (last / "state.json").write_text("{not json")
    else:
        (last / "state.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ModelLoadError):
        load_checkpoint(tmp_path / "c")
    assert zipfile.is_zipfile(last / "model.npz")
