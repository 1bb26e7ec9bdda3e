"""Datasets that read the preprocessed store (:mod:`medseg.preprocessing.store`) patch by patch.

:class:`PatchDataset` (training): item ``i`` is case ``i mod n``; for each of the plan's
``samples_per_case`` patches it draws a class with the plan's ``class_ratios`` (classes absent from
the case get weight 0, as MONAI's ``RandCropByLabelClassesd``), a centre among that class's stored
voxel coordinates, and reads from disk only the box of ``read_size(plan)`` voxels around it. The
box is placed exactly as the in-memory pipeline places its crop (volume padded symmetrically to
at least the box, centre shifted so the box stays inside), so both feed the same patch
transforms (:func:`medseg.preprocessing.pipeline.patch_transforms`). Memory per item is a few
boxes, whatever the number or size of the cases.

:class:`VolumeDataset` (validation): one whole pre-processed volume and its label at a time, as
MetaTensors carrying the affine (metrics in mm).

Random state: the sampler is a MONAI ``Randomizable`` attribute of the dataset, so MONAI's
``DataLoader`` seeds it per worker (``worker_init_fn``) from the run's seed, like the transforms.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

from medseg.errors import InputError
from medseg.plan.planner import Plan
from medseg.preprocessing.store import Store

__all__ = ["PatchDataset", "VolumeDataset", "StoredCase", "box_start", "read_box"]


def box_start(centre: Sequence[int], box: Sequence[int], shape: Sequence[int],
              margin: Sequence[int] = (0, 0, 0)) -> list[int]:
    """Start of a ``box`` around ``centre`` in a volume of ``shape``, as the in-memory pipeline pads then crops.

    That pipeline pads the volume by ``margin`` per side (:func:`~medseg.preprocessing.augment.read_padding`),
    then symmetrically to at least ``box`` (``SpatialPadd``), and shifts the centre so the box lies inside
    (``correct_crop_centers``). The start is returned in the unpadded volume's coordinates (negative or
    past the end where the box covers padding).
    """
    start = []
    for c, r, s, m in zip(centre, box, shape, margin, strict=True):
        size = s + 2 * m
        offset = max(r - size, 0) // 2
        padded = max(r, size)
        start.append(min(max(int(c) + m + offset - r // 2, 0), padded - r) - offset - m)
    return start


def read_box(array: Any, start: Sequence[int], box: Sequence[int], margin: Sequence[int] = (0, 0, 0),
             edge: bool = False) -> np.ndarray:
    """``array[:, start:start+box]`` of a (C, *spatial) array; reads only the part inside the array.

    Outside it: within ``margin`` of the array, the nearest edge value if ``edge`` (else 0), then 0,
    as ``read_padding`` followed by ``SpatialPadd`` fill a whole volume.
    """
    shape = array.shape[1:]
    lo = [max(s, 0) for s in start]
    hi = [min(s + r, n) for s, r, n in zip(start, box, shape, strict=True)]
    inner = np.asarray(array[(slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))])
    if list(inner.shape[1:]) == list(box):
        return inner
    if edge and any(margin):  # replicate the border voxels into the margin the box covers
        lo_m = [max(s, -m) for s, m in zip(start, margin, strict=True)]
        hi_m = [min(s + r, n + m) for s, r, n, m in zip(start, box, shape, margin, strict=True)]
        widths = [(0, 0)] + [(a - b, d - c) for a, b, c, d in zip(lo, lo_m, hi, hi_m, strict=True)]
        inner = np.pad(inner, widths, mode="edge")
        lo, hi = lo_m, hi_m
    out = np.zeros((array.shape[0], *box), dtype=inner.dtype)
    out[(slice(None), *(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True)))] = inner
    return out


class StoredCase:
    """One case of a store: metadata and class locations in memory, arrays opened on demand."""

    def __init__(self, case_dir: Path) -> None:
        self.dir = case_dir
        self.meta = json.loads((case_dir / "meta.json").read_text(encoding="utf-8"))
        with np.load(case_dir / "locations.npz") as npz:
            self.locations = [npz[f"class_{c}"] for c in range(len(npz.files))]

    def array(self, name: str) -> Any:
        """The blosc2 NDArray ``image`` or ``label`` (memory-mapped, read lazily)."""
        import blosc2

        try:
            return blosc2.open(str(self.dir / f"{name}.b2nd"), mode="r", mmap_mode="r", dparams={"nthreads": 1})
        except Exception as exc:
            raise InputError(f"{self.dir}: stored case {self.meta['case_id']} cannot be read ({exc}); "
                             "rerun `medseg preprocess` to rewrite it") from None

    def read(self, name: str, start: Sequence[int] | None = None, box: Sequence[int] | None = None,
             margin: Sequence[int] = (0, 0, 0)) -> np.ndarray:
        """A box (:func:`read_box`; the whole volume without ``start``) of ``image`` or ``label``.

        A damaged file raises :class:`InputError` naming the case.
        """
        arr = self.array(name)
        try:
            if start is None or box is None:
                return np.asarray(arr[...])
            return read_box(arr, start, box, margin, edge=name == "image")
        except Exception as exc:
            raise InputError(f"{self.dir}: stored case {self.meta['case_id']}: {name} is damaged ({exc}); "
                             "rerun `medseg preprocess` to rewrite it") from None


class ClassCentreSampler(Randomizable):
    """Draws ``(class, centre)`` pairs from a case's stored class locations with the plan's class ratios."""

    def __init__(self, ratios: Sequence[float]) -> None:
        self.ratios = np.asarray(ratios, float)

    def randomize(self, data: Any = None) -> None:
        return None

    def centre(self, locations: Sequence[np.ndarray]) -> np.ndarray:
        weights = np.array([r if len(loc) else 0.0 for r, loc in zip(self.ratios, locations, strict=True)])
        if weights.sum() <= 0:  # none of the weighted classes in this case: any voxel it has
            weights = np.array([float(len(loc) > 0) for loc in locations])
        cls = int(self.R.choice(len(weights), p=weights / weights.sum()))
        return locations[cls][int(self.R.randint(len(locations[cls])))]


class PatchDataset(torch.utils.data.Dataset):
    """Training patches from the store: item ``i`` is a list of ``samples_per_case`` patch dicts of case ``i mod n``.

    Args:
        store: the complete store.
        case_ids: the cases of this dataset (a fold's training cases).
        plan: the run's plan (``samples_per_case``, ``class_ratios``, read size).
        transform: patch transforms (:func:`~medseg.preprocessing.pipeline.patch_transforms`), applied to
            ``{"image": (C, *read_size) float32, "label": (1, *read_size) float32}``.
        length: items per epoch (default one per case).
    """

    def __init__(self, store: Store, case_ids: Sequence[str], plan: Plan, transform: Any,
                 length: int | None = None) -> None:
        from medseg.preprocessing.augment import read_size

        if not case_ids:
            raise InputError("no training cases to sample patches from")
        self.dirs = [store.case_dir(c) for c in case_ids]
        self.box = tuple(int(s) for s in read_size(plan))
        self.margin = tuple((r - p) // 2 for r, p in zip(self.box, plan.patch_size, strict=True))
        self.samples = int(plan.samples_per_case)
        self.sampler = ClassCentreSampler(plan.class_ratios)
        self.transform = transform
        self.length = int(length) if length is not None else len(self.dirs)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        case = StoredCase(self.dirs[int(index) % len(self.dirs)])  # read per item: nothing grows with the cases
        shape = case.meta["shape"]
        out = []
        for _ in range(self.samples):
            start = box_start(self.sampler.centre(case.locations), self.box, shape, self.margin)
            item = {"image": torch.from_numpy(case.read("image", start, self.box, self.margin)),
                    "label": torch.from_numpy(case.read("label", start, self.box, self.margin).astype(np.float32))}
            out.append(self.transform(item) if self.transform is not None else item)
        return out


class VolumeDataset(torch.utils.data.Dataset):
    """Whole pre-processed volumes from the store (validation): ``{"image", "label"}`` MetaTensors with the affine."""

    def __init__(self, store: Store, case_ids: Sequence[str], transform: Any = None) -> None:
        self.dirs = [store.case_dir(c) for c in case_ids]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from monai.data import MetaTensor

        case = StoredCase(self.dirs[index])
        affine = torch.as_tensor(case.meta["affine"], dtype=torch.float64)
        item = {"image": MetaTensor(torch.from_numpy(case.read("image")), affine=affine),
                "label": MetaTensor(torch.from_numpy(case.read("label").astype(np.float32)), affine=affine)}
        return self.transform(item) if self.transform is not None else item
