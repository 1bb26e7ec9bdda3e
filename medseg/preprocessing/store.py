"""The preprocessed store: each case pre-processed once to chunked, compressed arrays on disk.

Layout (``ROOT`` defaults to ``DATASET/.medseg_store``; delete a store by deleting its folder)::

    ROOT/<key>/store.json          what the key covers, the case list; written last ("complete")
    ROOT/<key>/<case_id>/image.b2nd   (C, X, Y, Z) float32, blosc2 NDArray, chunks of about one patch
    ROOT/<key>/<case_id>/label.b2nd   (1, X, Y, Z) uint8 (int16 above 255)
    ROOT/<key>/<case_id>/meta.json    shape, affine after pre-processing, source affine and shape,
                                      crop box, voxels per class
    ROOT/<key>/<case_id>/locations.npz  per class ``class_<c>``: (n, 3) int32 voxel coordinates,
                                      a seeded sample of at most ``MAX_LOCATIONS`` (every voxel of a
                                      smaller class)
    ROOT/<key>/<case_id>/manifest.json  size and SHA-256 of each file above; written last

``<key>`` hashes the pre-processing part of the plan (spacing, normalisation, the crop rule,
labels), the medseg version, the store format and each source file's path, size and mtime: a
changed plan or file never reads stale data, and every fold, study run and ``--resume`` on the
same data and plan shares one store.

Each case is written into a temporary folder and renamed into place, so a case folder is either
complete or absent; a killed run leaves temporary folders that the next run deletes, and it
writes only the missing cases. A case whose files do not match its manifest is rewritten by
:func:`preprocess_store`; :func:`open_store` refuses it (:class:`~medseg.errors.InputError`
naming the case) instead of reading it as data.

Chosen format: blosc2 NDArray (as nnU-Net v2), ZSTD level 5 with byte shuffle. Reading one
64x64x32 box of a 192x192x96 float32 volume takes about a third of zarr 3's time (same codec),
at the same size (``benchmarks/bench_data.py``). Images stay float32: training from the store
sees the same values as training from memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__
from medseg.data.datalist import Dataset
from medseg.errors import InputError
from medseg.plan.planner import Plan
from medseg.utils.files import atomic_write_text

__all__ = ["Store", "store_key", "store_ingredients", "default_root", "preprocess_store", "open_store",
           "verify_case", "write_case", "MAX_LOCATIONS", "STORE_DIRNAME"]

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
STORE_DIRNAME = ".medseg_store"
MAX_LOCATIONS = 10_000
CASE_FILES = ("image.b2nd", "label.b2nd", "meta.json", "locations.npz")
CROP_RULE = "nonzero of the raw image, any channel, after RAS reorientation"


@dataclass(frozen=True)
class Store:
    """A complete store: its folder and the ids of the cases it holds."""

    path: Path
    case_ids: tuple[str, ...]

    def case_dir(self, case_id: str) -> Path:
        return self.path / case_id


def default_root(data: str | os.PathLike[str]) -> Path:
    """``DATASET/.medseg_store``: the stores of every plan of a dataset, next to it."""
    return Path(data) / STORE_DIRNAME


def _identity(path: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def _files(entry: dict[str, Any]) -> list[str]:
    images = entry["image"] if isinstance(entry["image"], (list, tuple)) else [entry["image"]]
    return [*images, *([entry["label"]] if entry.get("label") else [])]


def store_ingredients(plan: Plan, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Everything the stored arrays depend on (what :func:`store_key` hashes)."""
    return {"format": STORE_FORMAT, "medseg": __version__, "spacing": [float(s) for s in plan.spacing],
            "normalization": [n.__dict__ for n in plan.normalization], "crop": CROP_RULE,
            "labels": plan.label_spec.to_dict(), "channels": {str(k): v for k, v in plan.channel_names.items()},
            "sources": {e["case_id"]: [_identity(f) for f in _files(e)] for e in entries}}


def store_key(plan: Plan, entries: Sequence[dict[str, Any]]) -> str:
    """The store's folder name: 16 hex digits of the SHA-256 of :func:`store_ingredients`."""
    text = json.dumps(store_ingredients(plan, entries), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_case(case_dir: Path, checksum: bool = True) -> str | None:
    """``None`` if the case folder matches its manifest, else what is wrong (sizes always, SHA-256 if asked)."""
    manifest = case_dir / "manifest.json"
    if not manifest.is_file():
        return "no manifest (incomplete case)"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest ({exc})"
    for name, want in files.items():
        path = case_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["size"]:
            return f"{name} has {path.stat().st_size} bytes, its manifest says {want['size']} (truncated?)"
        if checksum and _sha256(path) != want["sha256"]:
            return f"{name} fails its SHA-256 checksum"
    return None


def _locations(label: np.ndarray, value: int, rng: np.random.Generator) -> np.ndarray:
    """A sample of at most MAX_LOCATIONS voxel coordinates of ``label == value`` (all if fewer), without replacement."""
    flat = label.reshape(-1)
    count = int(np.count_nonzero(flat == value)) if value != 0 else int(flat.size - np.count_nonzero(flat))
    if count == 0:
        return np.zeros((0, 3), np.int32)
    if count <= MAX_LOCATIONS or count < flat.size // 100:  # a small class: its voxels are few enough to list
        idx = np.flatnonzero(flat == value)
        if idx.size > MAX_LOCATIONS:
            idx = np.sort(rng.choice(idx, MAX_LOCATIONS, replace=False))
    else:  # a large class (the background): draw voxels uniformly and keep those of the class
        need = int(np.ceil(MAX_LOCATIONS * flat.size / count * 1.2)) + 64
        cand = np.unique(rng.integers(0, flat.size, size=need))
        idx = cand[flat[cand] == value]
        idx = np.sort(rng.permutation(idx)[:MAX_LOCATIONS])
    return np.stack(np.unravel_index(idx, label.shape), axis=1).astype(np.int32)


def _crop_box(image: Any) -> list[list[int]]:
    """The crop to the nonzero region, ``[start, stop)`` per axis of the RAS source grid."""
    for op in image.applied_operations:
        if op["class"].startswith("CropForeground"):
            cut, size = op["extra_info"]["cropped"], op["orig_size"]
            return [[int(cut[2 * a]), int(size[a]) - int(cut[2 * a + 1])] for a in range(3)]
    return [[0, int(s)] for s in image.shape[1:]]


def _chunks(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    return (1, *(max(1, min(int(s), int(p))) for s, p in zip(shape[1:], patch, strict=True)))


def write_case(plan_dict: dict[str, Any], entry: dict[str, Any], store_dir: str) -> str:
    """Pre-process one case and write it atomically into ``store_dir/<case_id>``; returns the case id.

    Runs in a worker process (everything it takes is picklable).
    """
    import blosc2
    import torch
    from monai import transforms as mt

    from medseg.preprocessing.pipeline import preprocessing

    torch.set_num_threads(1)
    plan = Plan.from_dict(plan_dict)
    case_id = entry["case_id"]
    keys = ["image", "label"] if entry.get("label") else ["image"]
    try:
        data = mt.Compose(preprocessing(plan, keys=keys))({k: entry[k] for k in keys})
    except Exception as exc:
        raise InputError(f"case {case_id} ({_files(entry)[0]}): pre-processing failed: {type(exc).__name__}: {exc}") from None
    image = data["image"]
    img = np.ascontiguousarray(image.detach().cpu().numpy().astype(np.float32))
    lab = (np.rint(data["label"].detach().cpu().numpy()).astype(np.int64) if "label" in data
           else np.zeros((1, *img.shape[1:]), np.int64))
    lab = lab.astype(np.uint8 if lab.min() >= 0 and lab.max() < 256 else np.int16)
    final = Path(store_dir) / case_id
    tmp = Path(store_dir) / f".tmp-{case_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 5, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1}
        for name, arr in (("image.b2nd", img), ("label.b2nd", np.ascontiguousarray(lab))):
            blosc2.asarray(arr, urlpath=str(tmp / name), mode="w", chunks=_chunks(arr.shape, plan.patch_size),
                           cparams=cparams)
        rng = np.random.default_rng(zlib.crc32(case_id.encode("utf-8")))
        values = range(len(plan.class_ratios))
        np.savez_compressed(tmp / "locations.npz", **{f"class_{v}": _locations(lab[0], v, rng) for v in values})
        meta = {"case_id": case_id, "shape": list(img.shape[1:]), "channels": int(img.shape[0]),
                "affine": np.asarray(image.affine, float).tolist(),
                "source_affine": np.asarray(image.meta.get("original_affine", np.eye(4)), float).tolist(),
                "source_shape": [int(s) for s in image.meta.get("spatial_shape", img.shape[1:])],
                "crop_box": _crop_box(image), "has_label": "label" in data,
                "class_voxels": {str(v): int(np.count_nonzero(lab == v)) for v in values}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        files = {n: {"size": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in CASE_FILES}
        (tmp / "manifest.json").write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)  # an invalid older copy
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return case_id


def _pending(path: Path, entries: Sequence[dict[str, Any]], checksum: bool) -> list[dict[str, Any]]:
    """Cases still to write: missing, incomplete, truncated or failing their checksum. Clears stale temporaries."""
    for stale in path.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    todo = []
    for e in entries:
        case_dir = path / e["case_id"]
        if not case_dir.exists():
            todo.append(e)
            continue
        problem = verify_case(case_dir, checksum=checksum)
        if problem is not None:
            logger.warning("store: case %s is rewritten: %s", e["case_id"], problem)
            todo.append(e)
    return todo


def preprocess_store(dataset: Dataset, plan: Plan, root: str | os.PathLike[str] | None = None, workers: int = 1,
                     checksum: bool = True, entries: Sequence[dict[str, Any]] | None = None,
                     ) -> tuple[Store, list[str]]:
    """Write every missing or damaged case of ``dataset``'s training cases; ``(store, ids written now)``.

    ``workers`` > 1 pre-processes cases in that many processes. ``checksum`` verifies each stored
    case's SHA-256 (``False``: sizes only, for a quick start of training on a complete store).
    """
    entries = list(dataset.training if entries is None else entries)
    ids = [e["case_id"] for e in entries]
    path = Path(root if root is not None else default_root(dataset.root)) / store_key(plan, entries)
    path.mkdir(parents=True, exist_ok=True)
    info = path / "store.json"
    complete = info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("cases") == ids
    todo = _pending(path, entries, checksum=checksum or not complete)
    if todo:
        info.unlink(missing_ok=True)
        logger.info("store %s: pre-processing %d of %d case(s) with %d worker(s)", path, len(todo), len(ids), workers)
        written = _run(plan, todo, path, workers)
    else:
        written = []
    if written or not complete:
        atomic_write_text(info, json.dumps({"cases": ids, **store_ingredients(plan, entries)}, indent=1) + "\n")
    return Store(path, tuple(ids)), written


def _run(plan: Plan, todo: list[dict[str, Any]], path: Path, workers: int) -> list[str]:
    plan_dict = plan.to_dict()
    if workers <= 1 or len(todo) == 1:
        return [write_case(plan_dict, e, str(path)) for e in todo]
    import multiprocessing as mp

    written = []
    # fork where the platform has it (a spawned worker re-imports torch and MONAI: seconds each)
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
        futures = [pool.submit(write_case, plan_dict, e, str(path)) for e in todo]
        for n, fut in enumerate(as_completed(futures), 1):
            written.append(fut.result())
            logger.info("store: %d/%d case(s) written", n, len(todo))
    return written


def open_store(path: str | os.PathLike[str], checksum: bool = False) -> Store:
    """A complete store folder; :class:`InputError` naming the store or the case if it is not usable."""
    path = Path(path)
    info = path / "store.json"
    if not info.is_file():
        raise InputError(f"{path}: not a complete medseg store (no store.json); run `medseg preprocess`")
    ids = tuple(json.loads(info.read_text(encoding="utf-8"))["cases"])
    for case_id in ids:
        problem = verify_case(path / case_id, checksum=checksum)
        if problem is not None:
            raise InputError(f"{path / case_id}: stored case {case_id} is damaged: {problem}; "
                             "rerun `medseg preprocess` to rewrite it")
    return Store(path, ids)
