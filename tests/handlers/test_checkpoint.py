from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch

from medseg.errors import InputError
from medseg.handlers.checkpoint import CheckpointSaver, latest_checkpoint, load_checkpoint, restore


def _engine(epoch: int) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch))


def test_keeps_the_newest_two_and_the_best(tmp_path):
    model = torch.nn.Linear(2, 2)
    saver = CheckpointSaver(tmp_path, {"model": model}, keep=2)
    for epoch, score in [(1, 0.5), (2, 0.4), (3, 0.7)]:
        saver.save_last(_engine(epoch))
        saver.save_best(_engine(epoch), score)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["best.pt", "last_epoch=2.pt", "last_epoch=3.pt"]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_truncated_newest_falls_back_to_previous(tmp_path, caplog):
    model = torch.nn.Linear(2, 2)
    saver = CheckpointSaver(tmp_path, {"model": model}, keep=2)
    saver.save_last(_engine(1))
    saver.save_last(_engine(2))
    newest = tmp_path / "last_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    path, payload = latest_checkpoint(tmp_path)
    assert path.name == "last_epoch=1.pt" and payload["epoch"] == 1
    assert "last_epoch=2.pt: not a complete checkpoint (truncated or corrupted)" in caplog.text


def test_garbage_newest_is_skipped(tmp_path):
    model = torch.nn.Linear(2, 2)
    CheckpointSaver(tmp_path, {"model": model}).save_last(_engine(1))
    (tmp_path / "last_epoch=2.pt").write_bytes(b"not a checkpoint at all")
    path, _ = latest_checkpoint(tmp_path)
    assert path.name == "last_epoch=1.pt"


def test_restore_round_trip(tmp_path):
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    CheckpointSaver(tmp_path, {"model": a}).save_last(_engine(4))
    restore(load_checkpoint(tmp_path / "last_epoch=4.pt"), {"model": b})
    assert torch.equal(a.weight, b.weight)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Payload()}, path, pickle_module=pickle)
    with pytest.raises(InputError, match="evil.pt: contains a pickled object of type print that is not allowed"):
        load_checkpoint(path)


def test_keep_is_validated(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1, got 0"):
        CheckpointSaver(tmp_path, {}, keep=0)
