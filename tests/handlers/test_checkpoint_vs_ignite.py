"""Why medseg keeps its own checkpoint saver: ignite's ``Checkpoint`` deletes the old file before it writes the
new one, so a failure during the write (a full disk, a kill) leaves no checkpoint at all; ours keeps the last good one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint, DiskSaver

from medseg.handlers.checkpoint import CheckpointSaver, latest_checkpoint


class _FailingSecondWrite(DiskSaver):
    """A disk that fails on the second checkpoint write."""

    def __init__(self, dirname: str) -> None:
        super().__init__(dirname, require_empty=False)
        self.calls = 0

    def __call__(self, checkpoint, filename, metadata=None):  # noqa: ANN001, ANN204
        self.calls += 1
        if self.calls == 2:
            raise OSError("No space left on device")
        return super().__call__(checkpoint, filename, metadata)


class _Model(torch.nn.Linear):
    """A module whose second state_dict() fails, as a write interrupted half-way."""

    calls = 0

    def state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        type(self).calls += 1
        if type(self).calls == 2:
            raise OSError("No space left on device")
        return super().state_dict(*args, **kwargs)


def test_ignite_checkpoint_loses_everything_when_the_second_write_fails(tmp_path):
    engine = Engine(lambda e, b: None)
    saver = _FailingSecondWrite(str(tmp_path))
    handler = Checkpoint({"model": torch.nn.Linear(2, 2)}, saver, n_saved=1, global_step_transform=lambda e, _: e.state.epoch)
    engine.state.epoch = 1
    handler(engine)
    assert [p.name for p in tmp_path.iterdir()] == ["model_1.pt"]
    engine.state.epoch = 2
    with pytest.raises(OSError):
        handler(engine)
    assert list(tmp_path.iterdir()) == []  # the good epoch-1 file was removed before the failed write


def test_medseg_saver_keeps_the_last_good_checkpoint_when_a_write_fails(tmp_path):
    _Model.calls = 0
    saver = CheckpointSaver(tmp_path, {"model": _Model(2, 2)}, keep=1)
    saver.save_last(SimpleNamespace(state=SimpleNamespace(epoch=1)))
    with pytest.raises(OSError):
        saver.save_last(SimpleNamespace(state=SimpleNamespace(epoch=2)))
    assert [p.name for p in tmp_path.iterdir()] == ["last_epoch=1.pt"]  # no temporary file left behind either
    assert latest_checkpoint(tmp_path)[1]["epoch"] == 1
