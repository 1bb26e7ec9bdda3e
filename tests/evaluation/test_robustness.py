"""medseg robustness end to end on the tiny trained run: every shift predicted and scored, report written."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.evaluation.robustness import UNSHIFTED, shifts_for


def test_robustness_command_writes_table_json_plot_and_html(tiny_dataset, tiny_run, tmp_path, capsys):
    from medseg.cli.main import main

    out = tmp_path / "rob"
    code = main(["robustness", "--model", str(tiny_run.run_dir), "--images", str(tiny_dataset / "imagesTs"),
                 "--labels", str(tiny_dataset / "labelsTs"), "--out", str(out), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "robustness.json").read_text())
    names = [r["shift"] for r in result["rows"]]
    assert names == [UNSHIFTED, "offset", "contrast", "noise", "blur", "thick_slices"]  # CT: no bias field
    assert all(n in printed for n in names) and "Dice organ" in printed
    for row in result["rows"]:
        assert 0.0 <= row["mean_dice"] <= 1.0 and set(row["dice"]) == {"organ", "lesion"}
    assert result["rows"][0]["delta_mean_dice"] == 0.0
    assert (out / "robustness.png").stat().st_size > 1000 and "data:image/png;base64" in (out / "robustness.html").read_text()
    assert "| unshifted |" in (out / "robustness.md").read_text()
    # a shifted image keeps the input's grid and affine; +60 HU is +60 everywhere
    src = sorted((tiny_dataset / "imagesTs").glob("*.nii.gz"))[0]
    a, b = nib.load(str(src)), nib.load(str(out / "images" / "offset" / src.name))
    assert np.array_equal(a.affine, b.affine) and a.shape == b.shape
    assert np.allclose(b.get_fdata() - a.get_fdata(), 60.0, atol=1e-3)


def test_unknown_shift_is_refused_with_the_choices():
    with pytest.raises(InputError, match=r"--shifts bias_field: unknown for CT; choose from offset, contrast"):
        shifts_for("CT", ["bias_field"])
    assert [s.name for s in shifts_for("MR")][-1] == "bias_field"


def test_labels_without_a_dataset_json_are_named_from_the_model(tiny_dataset, tiny_run, tmp_path, capsys):
    import shutil

    from medseg.cli.main import main

    labels = tmp_path / "exported" / "labels"  # no dataset.json here or in its two parents
    shutil.copytree(tiny_dataset / "labelsTs", labels)
    out = tmp_path / "rob"
    args = ["robustness", "--model", str(tiny_run.run_dir), "--images", str(tiny_dataset / "imagesTs"),
            "--labels", str(labels), "--shifts", "offset", "--device", "cpu"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads((out / "robustness.json").read_text())
    assert all(set(row["dice"]) == {"organ", "lesion"} for row in result["rows"])
    assert json.loads((out / "labels.json").read_text()) == {"labels": {"background": 0, "organ": 1, "lesion": 2}}
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "rob2"), "--dataset", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing: no dataset.json found" in err and "Traceback" not in err
    assert not (tmp_path / "rob2").exists()  # refused before any prediction was written
