from __future__ import annotations

import json

import pytest

from medseg.data.datalist import case_id, kfold_split, load_dataset, parse_labels, split_train_val
from medseg.errors import InputError


def test_msd_dataset(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert ds.labels == {0: "background", 1: "organ", 2: "lesion"} and ds.num_classes == 3
    assert ds.modality == "CT" and len(ds.training) == 6 and len(ds.test) == 2
    assert ds.training[0]["case_id"] == "case_000"


def test_nnunet_v2_layout(tmp_path):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
    for k in range(2):
        (tmp_path / "imagesTr" / f"liver_{k:03d}_0000.nii.gz").write_bytes(b"")
        (tmp_path / "labelsTr" / f"liver_{k:03d}.nii.gz").write_bytes(b"")
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 2,
         "file_ending": ".nii.gz"}))
    ds = load_dataset(tmp_path)
    assert ds.labels == {0: "background", 1: "liver"}
    assert [d["case_id"] for d in ds.training] == ["liver_000", "liver_001"]
    assert ds.training[0]["image"].endswith("imagesTr/liver_000_0000.nii.gz")


def test_missing_dataset_json(tmp_path):
    with pytest.raises(InputError, match="no dataset.json found"):
        load_dataset(tmp_path)


def test_non_consecutive_labels(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "2": "x"}, "training": []}))
    with pytest.raises(InputError, match=r"labels must be consecutive integers starting at 0 \(background\), got \[0, 2\]"):
        load_dataset(tmp_path)


def test_case_id():
    assert case_id("/a/b/case_001.nii.gz") == "case_001" and case_id("x.nii") == "x"


def test_folds_are_disjoint_cover_all_and_seeded():
    items = [{"case_id": f"c{k}", "image": f"c{k}"} for k in range(11)]
    folds = kfold_split(items, 5, seed=3)
    ids = [it["case_id"] for f in folds for it in f]
    assert sorted(ids) == sorted(it["case_id"] for it in items) and len(set(ids)) == 11
    assert [len(f) for f in folds] == [3, 2, 2, 2, 2]
    assert kfold_split(items, 5, seed=3) == folds and kfold_split(items, 5, seed=4) != folds
    train, val = split_train_val(items, fold=2, folds=5, seed=3)
    assert val == folds[2] and len(train) + len(val) == 11
    with pytest.raises(InputError, match=r"--fold must be in \[0, 4\], got 5"):
        split_train_val(items, fold=5)


@pytest.mark.parametrize("raw", [
    {"labels": {"background": 0, "organ": 1, "lesion": 2}},
    {"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "lesion": [3]}, "regions_class_order": [1, 2, 3]},
], ids=["plain", "regions"])
def test_dataset_labels_is_the_inverse_of_parse_labels(raw):
    spec = parse_labels(raw["labels"], "dataset.json", raw.get("regions_class_order"))
    assert spec.dataset_labels() == raw
    assert parse_labels(spec.dataset_labels()["labels"], "x", spec.dataset_labels().get("regions_class_order")) == spec
    msd = parse_labels({"0": "background", "1": "organ", "2": "lesion"}, "dataset.json")  # MSD style comes out v2
    assert msd.dataset_labels() == {"labels": {"background": 0, "organ": 1, "lesion": 2}}
