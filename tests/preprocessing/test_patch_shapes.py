"""Training patches keep the planned shape whatever augmentation draws (they are stacked into batches)."""

from __future__ import annotations

from medseg.data.datalist import load_dataset
from medseg.plan import plan_dataset
from medseg.preprocessing.pipeline import train_transforms


def test_a_non_square_patch_keeps_its_shape(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    _, plan, _ = plan_dataset(dataset)
    plan = plan.replace(patch_size=(16, 24, 8), samples_per_case=4)  # in-plane sides differ
    transform = train_transforms(plan)
    transform.set_random_state(seed=0)
    shapes = {tuple(patch[key].shape) for _ in range(3) for item in dataset.training[:3]
              for patch in transform(item) for key in ("image", "label")}
    assert shapes == {(1, 16, 24, 8)}  # a quarter turn would give (1, 24, 16, 8)
