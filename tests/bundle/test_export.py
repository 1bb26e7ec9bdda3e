"""`medseg bundle export` of a `medseg train` run: MONAI's checks pass and bundle inference equals `medseg predict`."""

from __future__ import annotations

import importlib.util
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg.bundle.large_files import check_large_files
from medseg.cli.main import main
from tests.bundle.conftest import REPO, monai_bundle
from tests.bundle.test_portable import absolute_paths


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["bundle", "export", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not a medseg training run (no config.json)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_verify_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    assert main(["bundle", "verify", str(tmp_path)]) == 2
    assert "not a MONAI bundle (no configs/ folder)" in capsys.readouterr().err


@pytest.mark.slow
def test_exported_run_passes_checks_and_matches_predict(tmp_path, tiny_run, tiny_dataset, capsys):
    out = tmp_path / "exported"
    assert main(["bundle", "export", str(tiny_run.run_dir), str(out)]) == 0
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "model.ts").is_file()
    meta = json.loads((out / "configs" / "metadata.json").read_text(encoding="utf-8"))
    journal = [json.loads(line) for line in (tiny_run.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert meta["eval_metrics"]["val_mean_dice"] == pytest.approx(max(r["metrics"]["val_mean_dice"] for r in journal))
    train_cfg = json.loads((out / "configs" / "train.json").read_text(encoding="utf-8"))
    plan = train_cfg["pipeline"]["raw"]  # the run's plan, read back by medseg
    assert plan["network"]["filters"] == [8, 16, 32] and train_cfg["patch_size"] == plan["patch_size"] == [16, 16, 16]
    assert train_cfg["network_def"] == {"_target_": "medseg.plan.network.planned_network", "plan": "@pipeline"}
    assert (out / "docs" / "training_run" / "config.json").is_file()

    capsys.readouterr()
    code = main(["bundle", "verify", str(out)])
    report = capsys.readouterr().out
    for check in ("layout", "safe configs", "verify_net_in_out", "ckpt_export", "torchscript == eager"):
        assert f"PASS  {check}" in report, report
    if importlib.util.find_spec("jsonschema") is not None:
        assert code == 0 and "PASS  verify_metadata" in report
    else:  # only verify_metadata can fail, and it says why
        assert code == 2 and "FAIL  verify_metadata" in report and "jsonschema" in report

    # portable: no folder of this machine in any file; runs unchanged once copied elsewhere
    assert absolute_paths(out, tmp_path, tiny_dataset, tiny_run.run_dir, REPO) == []
    assert check_large_files(out) == "2 file(s) match their hashes"  # model.pt and model.ts
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(out, moved)
    monai_bundle("run", moved, config_file="configs/inference.json", dataset_dir=str(tiny_dataset / "imagesTs"),
                 output_dir=str(tmp_path / "bundle_seg"))
    main(["predict", "--model", str(tiny_run.run_dir), "--input", str(tiny_dataset / "imagesTs"),
          "--output", str(tmp_path / "medseg_seg")])
    for case in ("case_006", "case_007"):
        a = nib.load(tmp_path / "bundle_seg" / f"{case}_seg.nii.gz")
        b = nib.load(tmp_path / "medseg_seg" / f"{case}.nii.gz")
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), case
        assert np.allclose(a.affine, b.affine, atol=1e-5), case
