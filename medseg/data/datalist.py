"""Datasets on disk: Medical Segmentation Decathlon ``dataset.json`` and nnU-Net v2 raw layout.

A *datalist* is a list of ``{"image": path, "label": path, "case_id": str}`` dicts with absolute
paths, the form MONAI datasets take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import InputError

__all__ = ["Dataset", "load_dataset", "case_id", "split_train_val", "kfold_split", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_id(path: str | Path) -> str:
    """File name without its NIfTI suffix: ``/x/case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset: training and test datalists and the label map (index -> name)."""

    root: Path
    training: list[dict[str, str]]
    test: list[dict[str, str]]
    labels: dict[int, str]
    modality: str

    @property
    def num_classes(self) -> int:
        """Number of output channels including background."""
        return max(self.labels) + 1


def _parse_labels(raw: dict, source: Path) -> dict[int, str]:
    labels: dict[int, str] = {}
    for key, value in raw.items():
        # MSD: {"0": "background"}; nnU-Net v2: {"background": 0}
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit() and not str(key).isdigit()):
            idx, name = int(value), str(key)
        elif str(key).isdigit():
            idx, name = int(key), str(value)
        else:
            raise InputError(f"{source}: label entry {key!r}: {value!r} is neither MSD nor nnU-Net v2 style "
                             "(use {\"1\": \"organ\"} or {\"organ\": 1})")
        labels[idx] = name
    if sorted(labels) != list(range(len(labels))):
        raise InputError(f"{source}: labels must be consecutive integers from 0, got {sorted(labels)}")
    return labels


def _entry(root: Path, item: object, source: Path, with_label: bool) -> dict[str, str]:
    if isinstance(item, str):
        item = {"image": item}
    if not isinstance(item, dict) or "image" not in item:
        raise InputError(f"{source}: datalist entry {item!r} has no 'image'")
    out = {"image": str((root / item["image"]).resolve()), "case_id": case_id(item["image"])}
    if item.get("label"):
        out["label"] = str((root / item["label"]).resolve())
    elif with_label:
        raise InputError(f"{source}: training entry {item['image']!r} has no 'label'")
    return out


def _nnunet_entries(root: Path, images: str, labels: str, ending: str) -> list[dict[str, str]]:
    out = []
    for lab in sorted((root / labels).glob(f"*{ending}")):
        cid = lab.name[: -len(ending)]
        out.append({"image": str((root / images / f"{cid}_0000{ending}").resolve()), "label": str(lab.resolve()),
                    "case_id": cid})
    return out


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset folder (or its ``dataset.json``) in MSD or nnU-Net v2 raw layout."""
    p = Path(path)
    source = p if p.is_file() else p / "dataset.json"
    if not source.is_file():
        raise InputError(f"{p}: no dataset.json found (expected an MSD or nnU-Net v2 dataset folder)")
    try:
        meta = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "labels" not in meta:
        raise InputError(f"{source}: missing 'labels'")
    root = source.parent
    labels = _parse_labels(meta["labels"], source)
    modality_raw = meta.get("modality") or meta.get("channel_names") or {"0": "CT"}
    modality = str(next(iter(modality_raw.values()))) if isinstance(modality_raw, dict) else str(modality_raw)
    if "training" in meta:
        training = [_entry(root, it, source, with_label=True) for it in meta["training"]]
        test = [_entry(root, it, source, with_label=False) for it in meta.get("test", [])]
    else:  # nnU-Net v2 raw: files discovered from the folders
        ending = meta.get("file_ending", ".nii.gz")
        training = _nnunet_entries(root, "imagesTr", "labelsTr", ending)
        test = _nnunet_entries(root, "imagesTs", "labelsTs", ending) if (root / "labelsTs").is_dir() else []
    if not training:
        raise InputError(f"{source}: the training list is empty")
    return Dataset(root=root, training=training, test=test, labels=labels, modality=modality)


def kfold_split(items: list[dict[str, str]], folds: int = 5, seed: int = 0) -> list[list[dict[str, str]]]:
    """Split cases into ``folds`` disjoint groups, patient-wise and seeded.

    Each ``case_id`` is one patient, so all entries of a case land in the same fold.
    """
    if folds < 2:
        raise InputError(f"--folds must be >= 2, got {folds}")
    if len(items) < folds:
        raise InputError(f"{len(items)} training cases cannot make {folds} folds")
    ids = sorted({it["case_id"] for it in items})
    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = {ids[i]: k % folds for k, i in enumerate(order)}
    return [[it for it in items if fold_of[it["case_id"]] == f] for f in range(folds)]


def split_train_val(items: list[dict[str, str]], fold: int | None = None, folds: int = 5, seed: int = 0,
                    ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Training and validation lists: fold ``fold`` of ``folds`` is validation (fold 0 if None)."""
    k = 0 if fold is None else fold
    if not 0 <= k < folds:
        raise InputError(f"--fold must be in [0, {folds - 1}], got {fold}")
    groups = kfold_split(items, folds, seed)
    val = groups[k]
    train = [it for f, g in enumerate(groups) if f != k for it in g]
    return train, val
