"""validation_metrics inside MONAI's SupervisedEvaluator: per-class floats, empty policy, MLflow logging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.metrics import DiceMetric
from monai.transforms import AsDiscreted, Compose

from medseg.handlers.metrics import SegmentationMetricsAccumulator, spacing_from_affine, validation_metrics
from medseg.metrics import binary_metrics

SHAPE = (12, 10, 8)
AFFINE = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0], dtype=torch.float64))


class _Echo(torch.nn.Module):
    """'Network' returning logits that reproduce the batch's 'target' label map."""

    def forward(self, x):  # x: (B, 1, *spatial) holding the predicted label map
        labels = x[:, 0].long()
        return torch.nn.functional.one_hot(labels, 3).permute(0, 4, 1, 2, 3).float() * 10


def _batches():
    gt = torch.zeros(SHAPE)
    gt[2:8, 2:7, 2:6] = 1
    gt[4:6, 3:5, 3:5] = 2
    pred1 = torch.roll(gt, 1, 0)
    pred2 = gt.clone()
    pred2[pred2 == 2] = 0  # class 2 missed in case 2
    for pred in (pred1, pred2):
        yield {"image": MetaTensor(pred[None], affine=AFFINE), "label": MetaTensor(gt[None], affine=AFFINE)}


def _run(metrics, handlers=()):
    post = Compose([AsDiscreted(keys="pred", argmax=True, to_onehot=3), AsDiscreted(keys="label", to_onehot=3)])
    key = {"mean_dice": metrics.pop("mean_dice")}
    loader = [list_data_collate([case]) for case in _batches()]  # batches of one case, affine kept
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=_Echo(),
                                    postprocessing=post, key_val_metric=key, additional_metrics=metrics,
                                    val_handlers=list(handlers))
    evaluator.run()
    return evaluator.state.metrics


def test_metrics_are_plain_floats_per_class_and_follow_the_policy():
    state = _run(validation_metrics(3, {1: "liver", 2: "tumour"}))
    assert set(state) == {"mean_dice", *(f"{m}_{n}" for m in ("dice", "iou", "hd95") for n in ("liver", "tumour"))}
    assert all(type(v) is float and math.isfinite(v) for v in state.values())
    batches = list(_batches())
    gt = batches[0]["label"][0].numpy()
    case1 = binary_metrics(batches[0]["image"][0].numpy() == 2, gt == 2, (0.8, 0.8, 2.5))
    diagonal = math.sqrt((12 * 0.8) ** 2 + (10 * 0.8) ** 2 + (8 * 2.5) ** 2)
    # tumour: case 1 shifted one voxel, case 2 missed (Dice 0, HD95 = image diagonal, not NaN)
    assert state["dice_tumour"] == pytest.approx((case1.dice + 0.0) / 2)
    assert state["hd95_tumour"] == pytest.approx((case1.hd95 + diagonal) / 2)
    assert state["mean_dice"] == pytest.approx((state["dice_liver"] + state["dice_tumour"]) / 2)


def test_dice_equals_monai_dice_without_ignore_empty():
    pred = torch.zeros(2, 3, *SHAPE)
    gt = torch.zeros(2, 3, *SHAPE)
    gt[:, 1, 2:8, 2:7, 2:6] = 1
    pred[:, 1, 3:9, 2:7, 2:6] = 1
    pred[1, 2, 0:2, 0:2, 0:2] = 1  # false positive on empty GT: MONAI's default would drop it
    gt[:, 0] = 1 - gt[:, 1:].sum(1)
    pred[:, 0] = 1 - pred[:, 1:].sum(1)
    acc = SegmentationMetricsAccumulator(3)
    acc.update((pred, gt))
    ours = acc.compute()["dice"]
    monai = DiceMetric(include_background=False, ignore_empty=False)(pred, gt).mean(0)  # per case -> mean
    np.testing.assert_allclose(ours, monai.numpy(), atol=1e-6)


def test_shape_errors_and_arguments():
    acc = SegmentationMetricsAccumulator(3)
    with pytest.raises(ValueError, match=r"expected one-hot \(C=3, \*spatial\) pairs, got \(1, 4, 4\)"):
        acc.update(([torch.zeros(1, 4, 4)], [torch.zeros(1, 4, 4)]))
    with pytest.raises(ValueError, match="num_classes must be >= 2.*got 1"):
        validation_metrics(1)
    with pytest.raises(ValueError, match="hd_convention must be one of .* got 'x'"):
        validation_metrics(3, hd_convention="x")


def test_spacing_from_affine_falls_back_to_1mm():
    assert spacing_from_affine(torch.zeros(3), 3) == (1.0, 1.0, 1.0)
    assert spacing_from_affine(MetaTensor(torch.zeros(2, 2, 2), affine=AFFINE), 3) == pytest.approx((0.8, 0.8, 2.5))


def test_output_transform_default_is_from_engine():
    metrics = validation_metrics(2, output_transform=from_engine(["pred", "label"]))
    assert set(metrics) == {"mean_dice", "dice_label_1", "iou_label_1", "hd95_label_1"}
