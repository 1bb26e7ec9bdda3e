"""The boundary-loss schedule changes the weighted-sum weights per epoch, resumably, from configs."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from medseg.handlers.loss_schedule import BoundaryLossSchedule, LossWeightSchedule, boundary_weights
from medseg.losses import DeepSupervisionLoss, DiceLoss, create_loss


def _run(handler, epochs, loss, start_epoch=0):
    seen = []
    engine = Engine(lambda e, b: None)
    engine.loss_function = loss
    handler.attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(dict(handler.loss.weights)))
    if start_epoch:
        engine.state.epoch = start_epoch
        engine.state.max_epochs = epochs
        engine.state.iteration = start_epoch
        engine.state.epoch_length = 1
    engine.run([0], max_epochs=epochs)
    return seen


def test_rebalance_moves_weight_from_region_to_boundary():
    seen = _run(BoundaryLossSchedule(step=0.01), 3, create_loss("boundary"))
    # epoch e (0-based): boundary 0.01 + 0.01 e, region 1 - 0.01 e
    assert [round(w["boundary"], 6) for w in seen] == [0.01, 0.02, 0.03]
    assert [round(w["region"], 6) for w in seen] == [1.0, 0.99, 0.98]


def test_increase_variant_and_bounds():
    assert boundary_weights(500, rebalance=False) == {"region": 1.0, "boundary": 1.0}
    assert boundary_weights(500) == {"region": 0.01, "boundary": 1.0}


def test_resumed_run_gets_the_same_weights():
    seen = _run(BoundaryLossSchedule(step=0.1), 6, create_loss("boundary"), start_epoch=4)
    assert [round(w["boundary"], 6) for w in seen] == [0.41, 0.51]


def test_finds_the_sum_inside_deep_supervision_and_general_schedules():
    loss = DeepSupervisionLoss(create_loss("boundary"))
    seen = _run(LossWeightSchedule(lambda e: {"boundary": 0.5 * e}), 2, loss)
    assert [w["boundary"] for w in seen] == [0.0, 0.5]
    with pytest.raises(ValueError, match="no WeightedSumLoss found in loss DiceLoss"):
        LossWeightSchedule(lambda e: {}, loss=DiceLoss())
    with pytest.raises(ValueError, match="unknown loss term 'edge'; terms are region, boundary"):
        _run(LossWeightSchedule(lambda e: {"edge": 1.0}), 1, create_loss("boundary"))


def test_from_bundle_config():
    cfg = {
        "loss": {"_target_": "medseg.losses.region_boundary_loss", "softmax": True, "to_onehot_y": True},
        "schedule": {"_target_": "medseg.handlers.loss_schedule.BoundaryLossSchedule", "loss": "@loss", "step": 0.05},
    }
    parser = ConfigParser(cfg)
    handler = parser.get_parsed_content("schedule")
    assert isinstance(handler, BoundaryLossSchedule)
    assert handler.weights_at(2) == pytest.approx({"region": 0.9, "boundary": 0.11})
    with pytest.raises(ValueError, match=r"min_region must be in \[0, 1\], got 2"):
        BoundaryLossSchedule(min_region=2)
    torch.manual_seed(0)
