"""The one dataset reader: MSD ``dataset.json`` and nnU-Net v2 raw layout, read once for every command.

What it parses, and where each fact lives afterwards:

- **labels**: MSD ``{"0": "background", "1": "organ"}`` or nnU-Net v2 ``{"background": 0, "organ": 1}``;
  consecutive integers from 0. Region labels (nnU-Net v2: a list of values, e.g. BraTS
  ``{"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}`` with
  ``"regions_class_order": [1, 2, 3]``) make :attr:`Dataset.regions`.
- **channels**: ``channel_names`` (nnU-Net v2) or ``modality`` (MSD), ``{"0": "T1", "1": "FLAIR"}``.
- **cases**: MSD lists ``training`` / ``test`` entries (one file per case, 4D when several
  channels); nnU-Net v2 has ``imagesTr/<case>_<XXXX><file_ending>``, one file per channel.

A *datalist* is a list of ``{"image": path | [path per channel], "label": path, "case_id": str}``
dicts with absolute paths, the form MONAI datasets take (``LoadImaged`` stacks a list of files into
channels).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError

__all__ = ["Dataset", "load_dataset", "case_id", "split_train_val", "kfold_split", "NIFTI_SUFFIXES",
           "parse_labels", "parse_channels", "LabelMapError", "group_channel_files", "channel_file_pattern", "LabelSpec"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CHANNEL_FILE = re.compile(r"(.+)_(\d{4})$")


def case_id(path: str | Path) -> str:
    """File name without its NIfTI suffix: ``/x/case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def channel_file_pattern(path: str | Path) -> tuple[str, int] | None:
    """``(case, channel)`` of an nnU-Net channel file ``CASE_0001.nii.gz``, else None."""
    m = _CHANNEL_FILE.fullmatch(case_id(path))
    return (m.group(1), int(m.group(2))) if m else None


@dataclass(frozen=True)
class LabelSpec:
    """What the network predicts and how predictions map back to label values.

    Attributes:
        names: output index -> name. Without regions: label value -> name, 0 = background
            (softmax over ``len(names)`` channels). With regions: 1..K -> region name (sigmoid over K
            channels, no background channel).
        regions: region name -> the label values it covers, in output-channel order; None for
            plain labels.
        regions_class_order: label value painted for each region when converting sigmoid outputs
            back to a label map (later regions overwrite earlier ones, as nnU-Net).
    """

    names: dict[int, str]
    regions: dict[str, tuple[int, ...]] | None = None
    regions_class_order: tuple[int, ...] | None = None

    @property
    def is_regions(self) -> bool:
        return self.regions is not None

    @property
    def num_outputs(self) -> int:
        """Network output channels: classes incl. background, or one per region."""
        return len(self.regions) if self.regions is not None else max(self.names) + 1

    @property
    def label_values(self) -> set[int]:
        """Every value a label file may hold."""
        if self.regions is not None:
            return {0, *(v for vals in self.regions.values() for v in vals)}
        return set(self.names)

    @property
    def foreground(self) -> dict[int, str]:
        """Evaluated structures: output index -> name (classes without background, or every region)."""
        return {k: v for k, v in self.names.items() if self.regions is not None or k != 0}

    def to_dict(self) -> dict[str, Any]:
        return {"names": {str(k): v for k, v in self.names.items()},
                "regions": {k: list(v) for k, v in self.regions.items()} if self.regions is not None else None,
                "regions_class_order": list(self.regions_class_order) if self.regions_class_order else None}

    def dataset_labels(self) -> dict[str, Any]:
        """``labels`` (and ``regions_class_order``) as a ``dataset.json`` writes them, nnU-Net v2 style: the
        inverse of :func:`parse_labels`."""
        if self.regions is None:
            return {"labels": {name: value for value, name in sorted(self.names.items())}}
        return {"labels": {"background": 0, **{k: list(v) for k, v in self.regions.items()}},
                "regions_class_order": list(self.regions_class_order or ())}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LabelSpec:
        regions = raw.get("regions")
        order = raw.get("regions_class_order")
        return cls(names={int(k): str(v) for k, v in raw["names"].items()},
                   regions={k: tuple(int(x) for x in v) for k, v in regions.items()} if regions else None,
                   regions_class_order=tuple(int(x) for x in order) if order else None)


class LabelMapError(InputError):
    """A malformed ``labels`` map: ``problem`` and the ``values`` seen, for reports that list them apart."""

    def __init__(self, source: Path | str, problem: str, values: Any = "") -> None:
        self.problem, self.values = problem, values
        super().__init__(f"{source}: {problem}" + (f", got {values}" if values != "" else ""))


def parse_labels(raw: Any, source: Path | str, regions_class_order: Any = None) -> LabelSpec:
    """The label map of ``dataset.json`` (MSD or nnU-Net v2 style, plain or regions).

    Raises:
        InputError: naming ``source`` and the entry, for a malformed map, non-consecutive values or
            regions without a valid ``regions_class_order``.
    """
    if not isinstance(raw, dict) or not raw:
        raise LabelMapError(source, "missing or empty 'labels' map", raw)
    plain: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    for key, value in raw.items():
        if isinstance(value, list):  # nnU-Net v2 region: {"whole_tumor": [1, 2, 3]}
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise InputError(f"{source}: region {key!r}: expected a non-empty list of positive label values, "
                                 f"got {value!r}")
            regions[str(key)] = tuple(value)
        elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: {"organ": 1}
            plain[value] = str(key)
        elif isinstance(value, str) and value.isdigit() and not str(key).isdigit():
            plain[int(value)] = str(key)
        elif str(key).isdigit():  # MSD: {"1": "organ"}
            plain[int(key)] = str(value)
        else:
            raise LabelMapError(source, f"label entry {key!r} is neither MSD ({{\"1\": \"organ\"}}) nor nnU-Net v2 "
                                f"({{\"organ\": 1}} or a region {{\"tumour\": [1, 2]}}) style", value)
    if not regions:
        if sorted(plain) != list(range(len(plain))):
            raise LabelMapError(source, "labels must be consecutive integers starting at 0 (background)",
                                sorted(plain))
        return LabelSpec(names=plain)
    # regions: single values count as one-value regions; background (0) is not a region
    for value, name in plain.items():
        if value != 0:
            regions[name] = (value,)
    values = sorted({0, *(v for vals in regions.values() for v in vals)})
    if values != list(range(len(values))):
        raise LabelMapError(source, "labels must be consecutive integers starting at 0 (background)", values)
    if regions_class_order is None:
        raise InputError(f"{source}: region labels need 'regions_class_order' (one label value per region)")
    if (not isinstance(regions_class_order, list) or len(regions_class_order) != len(regions)
            or not all(isinstance(v, int) for v in regions_class_order)):
        raise InputError(f"{source}: 'regions_class_order' must list one integer per region ({len(regions)}), "
                         f"got {regions_class_order!r}")
    names = {i + 1: name for i, name in enumerate(regions)}
    return LabelSpec(names=names, regions=regions, regions_class_order=tuple(regions_class_order))


def parse_channels(meta: dict[str, Any]) -> dict[int, str]:
    """Channel index -> name from ``channel_names`` (nnU-Net v2) or ``modality`` (MSD); CT if absent."""
    raw = meta.get("channel_names") or meta.get("modality") or {"0": "CT"}
    if isinstance(raw, str):
        return {0: raw}
    if not isinstance(raw, dict) or not all(str(k).isdigit() for k in raw):
        raise InputError(f"'channel_names' / 'modality' must map channel indices to names, got {raw!r}")
    channels = {int(k): str(v) for k, v in raw.items()}
    if sorted(channels) != list(range(len(channels))):
        raise InputError(f"channel indices must be consecutive from 0, got {sorted(channels)}")
    return channels


@dataclass(frozen=True)
class Dataset:
    """A parsed dataset: datalists, label specification, channels and layout."""

    root: Path
    training: list[dict[str, Any]]
    test: list[dict[str, Any]]
    label_spec: LabelSpec
    channel_names: dict[int, str]
    layout: str  # "msd" or "nnunet"
    file_ending: str = ".nii.gz"

    @property
    def labels(self) -> dict[int, str]:
        """Output index -> name (see :class:`LabelSpec`)."""
        return self.label_spec.names

    @property
    def num_classes(self) -> int:
        """Network output channels (classes incl. background, or regions)."""
        return self.label_spec.num_outputs

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def modality(self) -> str:
        """Name of the first channel ("CT", "T1", ...)."""
        return self.channel_names[0]


def _entry(root: Path, item: object, source: Path, with_label: bool) -> dict[str, Any]:
    if isinstance(item, str):
        item = {"image": item}
    if not isinstance(item, dict) or "image" not in item:
        raise InputError(f"{source}: datalist entry {item!r} has no 'image'")
    image = item["image"]
    out: dict[str, Any] = {
        "image": [str((root / f).resolve()) for f in image] if isinstance(image, list) else str((root / image).resolve()),
        "case_id": case_id(image[0] if isinstance(image, list) else image)}
    if item.get("label"):
        out["label"] = str((root / item["label"]).resolve())
        out["case_id"] = case_id(item["label"])
    elif with_label:
        raise InputError(f"{source}: training entry {item['image']!r} has no 'label'")
    return out


def group_channel_files(files: Iterable[Path], num_channels: int, where: str = "--input") -> list[tuple[str, Any]]:
    """Cases of a folder listing: ``(case_id, path)`` for one file per case, or ``(case_id, [paths])``.

    Files named ``CASE_XXXX`` are grouped into cases (nnU-Net layout) when the listing is made of
    such names only; each case must then have exactly the channels ``0000 .. num_channels-1``.

    Raises:
        InputError: naming the case and the missing or extra channel file.
    """
    files = sorted(files)
    parsed = [channel_file_pattern(f) for f in files]
    channel_layout = bool(files) and all(p is not None for p in parsed) and (
        num_channels > 1 or all(p[1] == 0 for p in parsed if p is not None))
    if not channel_layout:  # one file per case (MSD; several channels in a 4D file, checked on load)
        return [(case_id(f), f) for f in files]
    groups: dict[str, dict[int, Path]] = {}
    for f, p in zip(files, parsed, strict=True):
        if p is not None:
            groups.setdefault(p[0], {})[p[1]] = f
    out: list[tuple[str, Any]] = []
    for cid, chans in sorted(groups.items()):
        ending = next(iter(chans.values())).name[len(cid) + 5:]
        missing = [c for c in range(num_channels) if c not in chans]
        extra = sorted(c for c in chans if c >= num_channels)
        if missing:
            raise InputError(f"{where}: case {cid!r} lacks channel file {cid}_{missing[0]:04d}{ending} "
                             f"({num_channels} channel(s) expected)")
        if extra:
            raise InputError(f"{where}: case {cid!r} has an extra channel file {chans[extra[0]].name} "
                             f"({num_channels} channel(s) expected)")
        paths = [chans[c] for c in range(num_channels)]
        out.append((cid, paths if num_channels > 1 else paths[0]))
    return out


def _nnunet_entries(root: Path, images: str, labels: str | None, ending: str, num_channels: int,
                    ) -> list[dict[str, Any]]:
    folder = root / images
    if not folder.is_dir():
        return []
    files = [f for f in folder.iterdir() if f.name.endswith(ending) and not f.name.startswith(".")]
    bad = [f.name for f in files if channel_file_pattern(f) is None]
    if bad:
        raise InputError(f"{folder / bad[0]}: image name does not follow <case>_<XXXX>{ending}")
    out = []
    for cid, image in group_channel_files(files, num_channels, where=str(folder)):
        entry: dict[str, Any] = {"image": [str(p.resolve()) for p in image] if isinstance(image, list)
                                 else str(image.resolve()), "case_id": cid}
        if labels is not None:
            lab = root / labels / f"{cid}{ending}"
            if not lab.is_file():
                raise InputError(f"{lab}: label file missing for case {cid!r}")
            entry["label"] = str(lab.resolve())
        out.append(entry)
    return out


def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(dataset.json path, parsed JSON)`` of a dataset folder or its ``dataset.json``."""
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
    return source, meta


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset folder (or its ``dataset.json``) in MSD or nnU-Net v2 raw layout."""
    source, meta = read_meta(path)
    root = source.parent
    spec = parse_labels(meta["labels"], source, meta.get("regions_class_order"))
    try:
        channels = parse_channels(meta)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    ending = str(meta.get("file_ending", ".nii.gz"))
    if "training" in meta:
        layout = "msd"
        training = [_entry(root, it, source, with_label=True) for it in meta["training"]]
        test = [_entry(root, it, source, with_label=False) for it in meta.get("test", [])]
    else:  # nnU-Net v2 raw: files discovered from the folders
        layout = "nnunet"
        training = _nnunet_entries(root, "imagesTr", "labelsTr", ending, len(channels))
        test = _nnunet_entries(root, "imagesTs", "labelsTs" if (root / "labelsTs").is_dir() else None, ending,
                               len(channels))
    if not training:
        raise InputError(f"{source}: the training list is empty")
    return Dataset(root=root, training=training, test=test, label_spec=spec, channel_names=channels,
                   layout=layout, file_ending=ending)


def kfold_split(items: Sequence[dict[str, Any]], folds: int = 5, seed: int = 0) -> list[list[dict[str, Any]]]:
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


def split_train_val(items: Sequence[dict[str, Any]], fold: int | None = None, folds: int = 5, seed: int = 0,
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and validation lists: fold ``fold`` of ``folds`` is validation (fold 0 if None)."""
    k = 0 if fold is None else fold
    if not 0 <= k < folds:
        raise InputError(f"--fold must be in [0, {folds - 1}], got {fold}")
    groups = kfold_split(items, folds, seed)
    val = groups[k]
    train = [it for f, g in enumerate(groups) if f != k for it in g]
    return train, val
