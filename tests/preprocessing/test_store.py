"""The preprocessed store: same arrays as the in-memory pipeline, keyed by plan and files, resumable, checked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from monai import transforms as mt

from medseg.data.datalist import load_dataset
from medseg.errors import InputError
from medseg.plan.planner import ComputeBudget, make_plan
from medseg.preprocessing.patches import PatchDataset, StoredCase, VolumeDataset, box_start, read_box
from medseg.preprocessing.pipeline import patch_transforms, preprocessing
from medseg.preprocessing.store import MAX_LOCATIONS, open_store, preprocess_store, store_key, verify_case


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """4 training cases of 24x24x12 voxels and their CPU plan."""
    from medseg.data.synth import SynthConfig, synthesise_dataset
    from medseg.plan.fingerprint import extract_fingerprint

    root = tmp_path_factory.mktemp("store_data")
    synthesise_dataset(root, SynthConfig(train_cases=4, test_cases=0, size=24, seed=3))
    dataset = load_dataset(root)
    plan, _ = make_plan(extract_fingerprint(dataset), dataset, ComputeBudget.for_device("cpu"),
                        {"patch_size": (16, 16, 8)})
    return dataset, plan


def _manifests(path: Path) -> dict[str, str]:
    return {d.name: (d / "manifest.json").read_text() for d in sorted(path.iterdir()) if d.is_dir()}


def test_stored_case_equals_the_in_memory_preprocessing(small, tmp_path):
    dataset, plan = small
    store, written = preprocess_store(dataset, plan, tmp_path, workers=1)
    assert sorted(written) == sorted(e["case_id"] for e in dataset.training)
    entry = dataset.training[1]
    ref = mt.Compose(preprocessing(plan))(dict(entry))
    case = StoredCase(store.case_dir(entry["case_id"]))
    np.testing.assert_array_equal(case.read("image"), ref["image"].numpy())  # float32, bit for bit
    np.testing.assert_array_equal(case.read("label"), ref["label"].numpy().round())
    assert case.meta["shape"] == list(ref["image"].shape[1:])
    np.testing.assert_allclose(case.meta["affine"], ref["image"].affine.numpy())
    label = case.read("label")[0]
    for value, locations in enumerate(case.locations):
        # every voxel of a class under MAX_LOCATIONS is listed; each listed voxel holds its class
        assert len(locations) == min(MAX_LOCATIONS, int((label == value).sum()))
        assert (label[tuple(locations.T)] == value).all()
    volume = VolumeDataset(store, [entry["case_id"]])[0]
    np.testing.assert_allclose(volume["image"].affine.numpy(), ref["image"].affine.numpy())


def test_a_rerun_writes_nothing_and_an_interrupted_one_only_the_missing_cases(small, tmp_path):
    dataset, plan = small
    store, _ = preprocess_store(dataset, plan, tmp_path, workers=2)
    complete = _manifests(store.path)
    assert preprocess_store(dataset, plan, tmp_path)[1] == []
    # what a killed run leaves: a case never renamed into place, a half-written temporary folder
    shutil.rmtree(store.path / "case_002")
    (store.path / ".tmp-case_002-999").mkdir()
    (store.path / "store.json").unlink()
    assert preprocess_store(dataset, plan, tmp_path)[1] == ["case_002"]
    assert _manifests(store.path) == complete  # the same bytes as the uninterrupted run
    assert not list(store.path.glob(".tmp-*"))


def test_a_truncated_case_is_refused_then_rewritten(small, tmp_path):
    dataset, plan = small
    store, _ = preprocess_store(dataset, plan, tmp_path)
    image = store.path / "case_001" / "image.b2nd"
    image.write_bytes(image.read_bytes()[:-50])
    assert "truncated" in verify_case(store.path / "case_001", checksum=False)
    with pytest.raises(InputError, match=r"case_001 is damaged: image\.b2nd has \d+ bytes"):
        open_store(store.path)
    assert preprocess_store(dataset, plan, tmp_path, checksum=False)[1] == ["case_001"]
    open_store(store.path, checksum=True)


def test_a_corrupted_case_fails_its_checksum(small, tmp_path):
    dataset, plan = small
    store, _ = preprocess_store(dataset, plan, tmp_path)
    label = store.path / "case_000" / "label.b2nd"
    raw = bytearray(label.read_bytes())
    raw[-20] ^= 0xFF  # same size, other bytes
    label.write_bytes(bytes(raw))
    assert verify_case(store.path / "case_000", checksum=False) is None
    assert "checksum" in verify_case(store.path / "case_000")
    assert preprocess_store(dataset, plan, tmp_path)[1] == ["case_000"]


def test_the_key_changes_with_the_spacing_and_the_files(small, tmp_path):
    dataset, plan = small
    key = store_key(plan, dataset.training)
    assert store_key(plan.replace(patch_size=(8, 8, 8)), dataset.training) == key  # not a pre-processing value
    assert store_key(plan.replace(spacing=(1.0, 1.0, 3.0)), dataset.training) != key  # --pixdim
    copy = tmp_path / "data"
    shutil.copytree(dataset.root, copy)
    moved = load_dataset(copy)
    first = moved.training[0]["image"]
    before = store_key(plan, moved.training)
    os.utime(first, ns=(0, os.stat(first).st_mtime_ns + 10**9))
    assert store_key(plan, moved.training) != before


def test_box_reads_equal_the_pipeline_padding_and_crop(small, tmp_path):
    """For centres everywhere, near borders included, the box from disk is the in-memory pipeline's crop."""
    from medseg.preprocessing.augment import read_size
    from medseg.preprocessing.pipeline import train_transforms

    dataset, plan = small
    store, _ = preprocess_store(dataset, plan, tmp_path)
    entry = dataset.training[0]
    case = StoredCase(store.case_dir(entry["case_id"]))
    steps = train_transforms(plan).transforms
    n_pre = len(preprocessing(plan))
    pads = [t for t in steps[n_pre:] if isinstance(t, (mt.BorderPadd, mt.SpatialPadd))]
    padded = mt.Compose([*steps[:n_pre], *pads])(dict(entry))
    box = read_size(plan)
    margin = [(r - p) // 2 for r, p in zip(box, plan.patch_size, strict=True)]
    shape = case.meta["shape"]
    offset = [(p - s) // 2 for p, s in zip(padded["image"].shape[1:], shape, strict=True)]  # total padding before
    rng = np.random.default_rng(0)
    for centre in [(0, 0, 0), [s - 1 for s in shape], *rng.integers(0, shape, size=(10, 3))]:
        moved = [c + o for c, o in zip(centre, offset, strict=True)]
        fixed = mt.utils.correct_crop_centers(moved, box, padded["image"].shape[1:])
        crop = mt.SpatialCrop(roi_center=fixed, roi_size=box)
        start = box_start(centre, box, shape, margin)
        np.testing.assert_array_equal(case.read("image", start, box, margin), crop(padded["image"]).numpy())
        np.testing.assert_array_equal(case.read("label", start, box, margin), crop(padded["label"]).numpy())


def test_read_box_fills_the_margin_with_edge_values_then_zeros():
    volume = np.arange(1, 1 + 4 * 5 * 3, dtype=np.float32).reshape(1, 4, 5, 3)
    margin, start, box = (2, 1, 0), (-3, 2, -1), (6, 6, 4)
    reference = np.pad(np.pad(volume, [(0, 0), (2, 2), (1, 1), (0, 0)], mode="edge"), [(0, 0), (9, 9), (9, 9), (9, 9)])
    origin = [9 + m for m in margin]  # index of voxel 0 in the reference
    want = reference[(slice(None), *(slice(o + s, o + s + b) for o, s, b in zip(origin, start, box, strict=True)))]
    np.testing.assert_array_equal(read_box(volume, start, box, margin, edge=True), want)
    assert read_box(volume, start, box, margin)[0, 0, 0, 0] == 0  # a label: zeros only


def test_patches_are_centred_on_the_sampled_class(small, tmp_path):
    """With all weight on the lesion class, every patch holds the lesion voxel it was centred on."""
    dataset, plan = small
    store, _ = preprocess_store(dataset, plan, tmp_path)
    ids = [c for c in store.case_ids if len(StoredCase(store.case_dir(c)).locations[2])]
    assert ids
    only_lesion = plan.replace(class_ratios=(0.0, 0.0, 1.0), samples_per_case=3)
    patches = PatchDataset(store, ids, only_lesion, transform=None, length=8)
    patches.sampler.set_random_state(0)
    assert len(patches) == 8
    for i in range(8):
        items = patches[i]
        assert len(items) == 3
        for item in items:
            assert item["image"].shape[1:] == item["label"].shape[1:]
            label = item["label"][0].numpy()
            assert (label == 2).any()  # the sampled voxel stays inside its box
    out = PatchDataset(store, ids, plan, patch_transforms(plan))[0][0]
    assert tuple(out["image"].shape[1:]) == tuple(plan.patch_size)


def test_patch_memory_does_not_grow_with_the_cases(small, tmp_path):
    """Peak allocations while drawing the same number of patches from 1 and from 4 cases (tracemalloc)."""
    import tracemalloc

    dataset, plan = small
    store, _ = preprocess_store(dataset, plan, tmp_path)
    peaks = []
    for ids in (list(store.case_ids[:1]), list(store.case_ids)):
        patches = PatchDataset(store, ids, plan, transform=None, length=16)
        tracemalloc.start()
        for i in range(16):
            patches[i]
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= 1.2 * peaks[0], peaks


def test_preprocess_command(small, tmp_path, capsys):
    from medseg.cli.main import main

    dataset, _ = small
    assert main(["preprocess", str(dataset.root), "--out", str(tmp_path), "--workers", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "4 written now, 0 reused" in out
    key_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert json.loads((key_dir / "store.json").read_text())["cases"] == [e["case_id"] for e in dataset.training]
    assert main(["preprocess", str(dataset.root), "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert "0 written now, 4 reused" in capsys.readouterr().out
    assert main(["preprocess", str(dataset.root), "--out", str(tmp_path), "--pixdim", "1.6", "1.6", "2.5",
                 "--device", "cpu", "--workers", "1"]) == 0
    assert "4 written now" in capsys.readouterr().out
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # a new store for the new spacing
    assert main(["preprocess", str(dataset.root), "--workers", "0"]) == 2


@pytest.mark.slow
def test_a_killed_preprocess_resumes_to_the_same_store(small, tmp_path):
    """SIGKILL `medseg preprocess` once a case is stored; the rerun writes the rest, byte-identical to a full run."""
    import signal
    import subprocess
    import sys
    import time

    dataset, _ = small
    cmd = [sys.executable, "-m", "medseg.cli.main", "preprocess", str(dataset.root), "--workers", "1", "--device", "cpu"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not list((tmp_path / "killed").glob("*/case_*")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [store] = list((tmp_path / "killed").iterdir())
    done = [p.name for p in store.glob("case_*")]
    if len(done) == len(dataset.training):
        pytest.skip("the run finished before it could be killed")
    assert not (store / "store.json").exists()
    out = subprocess.run([*cmd, "--out", str(tmp_path / "killed")], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    assert f"{len(dataset.training) - len(done)} written now, {len(done)} reused" in out
    from medseg.plan.planner import plan_dataset

    full, _ = preprocess_store(dataset, plan_dataset(dataset, device="cpu")[1], tmp_path / "full")  # uninterrupted
    assert full.path.name == store.name and _manifests(full.path) == _manifests(store)
