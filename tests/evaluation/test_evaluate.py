"""evaluate_folders: 20-case folder with empty prediction and empty GT, outputs, mismatches, report."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.evaluation.evaluate import evaluate_folders, load_label_names

SHAPE = (20, 18, 12)
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
N_CASES = 20


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _make_dataset(root: Path, n_cases: int = N_CASES) -> tuple[Path, Path]:
    """MSD layout under root/, predictions under root/pred. Case 0: empty prediction of class 1;
    case 1: empty ground truth of class 2 with a spurious prediction; others: shifted boxes."""
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "tumour"}}))
    for i in range(n_cases):
        gt = np.zeros(SHAPE, np.uint8)
        gt[4:14, 4:12, 3:9] = 1
        if i != 1:
            gt[8:11, 6:9, 4:7] = 2
        pred = np.roll(gt, int(rng.integers(0, 3)), axis=0)
        if i == 0:
            pred[pred == 1] = 0
        if i == 1:
            pred[15:17, 14:16, 1:3] = 2
        image = rng.normal(0, 20, SHAPE).astype(np.float32) + 100 * gt
        name = f"case_{i:03d}.nii.gz"
        _save(root / "labelsTs" / name, gt)
        _save(root / "pred" / name, pred)
        _save(root / "imagesTs" / name, image)
    return root / "pred", root / "labelsTs"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("msd")
    pred, gt = _make_dataset(root)
    out = root / "eval"
    summary = evaluate_folders(pred, gt, out, workers=2, progress=False)
    return root, out, summary


def test_writes_the_three_files(evaluated):
    _, out, summary = evaluated
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "report.html", "summary.json"]
    assert summary["outputs"]["report_html"].endswith("report.html")


def test_csv_has_one_row_per_case_and_class(evaluated):
    _, out, _ = evaluated
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    assert len(rows) == N_CASES * 2
    assert {r["name"] for r in rows} == {"liver", "tumour"}  # names from dataset.json
    miss = next(r for r in rows if r["case"] == "case_000" and r["label"] == "1")
    assert miss["situation"] == "pred_empty" and float(miss["dice"]) == 0.0
    # worst case distance = image diagonal: sqrt((20*.8)^2 + (18*.8)^2 + (12*2.5)^2)
    assert float(miss["hd95"]) == pytest.approx(np.sqrt(16**2 + 14.4**2 + 30**2), rel=1e-5)


def test_summary_counts_empty_situations_and_lists_worst_cases(evaluated):
    _, out, summary = evaluated
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    liver, tumour = on_disk["classes"]["1"], on_disk["classes"]["2"]
    assert liver["empty_counts"] == {"both_present": 19, "both_empty": 0, "gt_empty": 0, "pred_empty": 1}
    assert tumour["empty_counts"] == {"both_present": 19, "both_empty": 0, "gt_empty": 1, "pred_empty": 0}
    assert liver["worst_cases"][0]["case"] == "case_000"
    assert set(liver["metrics"]["dice"]) == {"mean", "std", "median", "p5", "p95", "n", "n_nan"}
    assert liver["metrics"]["dice"]["n"] == N_CASES
    assert on_disk["empty_policy"]["pred_empty"]["hd95"] == "worst"
    assert summary["classes"]["1"]["metrics"]["hd95"]["mean"] == pytest.approx(liver["metrics"]["hd95"]["mean"])


def test_report_is_self_contained_with_plots_and_overlays(evaluated, tmp_path):
    _, out, _ = evaluated
    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*['\"](https?:)?//", page), "report must not load anything from the network"
    images = re.findall(r"src=['\"]data:image/png;base64,([A-Za-z0-9+/=]+)['\"]", page)
    assert len(images) >= 3  # Dice plot, HD95 plot, at least one worst-case overlay
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert "case_000" in page and "pred_empty" in page
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        return  # structural check only: no headless browser on this machine
    shot = tmp_path / "shot.png"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60,
    ).stdout
    assert dom.count("data:image/png;base64") == len(images)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", (out / "report.html").as_uri()], capture_output=True, timeout=60)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_shape_mismatch_names_the_case_and_writes_nothing(tmp_path):
    pred, gt = _make_dataset(tmp_path, n_cases=3)
    _save(pred / "case_002.nii.gz", np.zeros((5, 5, 5), np.uint8))
    (pred / "case_007.nii.gz").write_bytes((pred / "case_000.nii.gz").read_bytes())
    (pred / "case_001.nii.gz").unlink()
    out = tmp_path / "eval"
    with pytest.raises(InputError) as info:
        evaluate_folders(pred, gt, out, progress=False)
    problems = info.value.problems
    assert len(problems) == 3
    assert any(p.startswith("case_002: prediction") and "shape (5, 5, 5)" in p for p in problems)
    assert any(p.startswith("case_001: no prediction") for p in problems)
    assert any(p.startswith("case_007:") and "has no ground truth" in p for p in problems)
    assert not out.exists()


def test_affine_mismatch_and_float_probabilities_are_problems(tmp_path):
    pred, gt = _make_dataset(tmp_path, n_cases=2)
    data = np.asanyarray(nib.load(str(pred / "case_000.nii.gz")).dataobj)
    _save(pred / "case_000.nii.gz", data, np.diag([0.8, 0.8, 2.6, 1.0]))
    with pytest.raises(InputError, match=r"case_000: prediction .* affine differs .* by up to 0\.1"):
        evaluate_folders(pred, gt, tmp_path / "e1", progress=False)
    _save(pred / "case_000.nii.gz", data)
    _save(pred / "case_001.nii.gz", np.full(SHAPE, 0.3, np.float32))
    with pytest.raises(InputError, match=r"case_001: .* non-integer values"):
        evaluate_folders(pred, gt, tmp_path / "e2", progress=False)
    assert not (tmp_path / "e2").exists()


def test_labels_argument_and_names_without_dataset_json(tmp_path):
    pred, gt = _make_dataset(tmp_path / "d", n_cases=2)
    (tmp_path / "d" / "dataset.json").unlink()
    summary = evaluate_folders(pred, gt, tmp_path / "e", labels=[2], hd_convention="medpy", progress=False)
    assert list(summary["classes"]) == ["2"] and summary["classes"]["2"]["name"] == "label_2"
    summary = evaluate_folders(pred, gt, tmp_path / "e", progress=False)  # labels found in the data
    assert list(summary["classes"]) == ["1", "2"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({"0": "background", "1": "liver"}, {0: "background", 1: "liver"}, id="msd"),
        pytest.param({"background": 0, "liver": 1}, {0: "background", 1: "liver"}, id="nnunet_v2"),
        pytest.param({"background": 0, "liver": 1, "vessel": [2]}, {0: "background", 1: "liver", 2: "vessel"},
                     id="nnunet_v2_regions"),
        pytest.param({"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
                     {0: "background", 3: "enhancing_tumor"}, id="brats_regions"),
    ],
)
def test_label_names_from_dataset_json(tmp_path, labels, expected):
    (tmp_path / "labelsTs").mkdir()
    n_regions = sum(1 for k, v in labels.items() if k != "background")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels, "regions_class_order": list(range(1, n_regions + 1))}))
    assert load_label_names(tmp_path / "labelsTs") == expected


def test_malformed_dataset_json_is_reported_by_the_one_reader(tmp_path):
    (tmp_path / "labelsTs").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": [1, 2]}}))
    with pytest.raises(InputError, match=r"dataset.json: region labels need 'regions_class_order'"):
        load_label_names(tmp_path / "labelsTs")


def test_bad_argument_values(tmp_path):
    with pytest.raises(ValueError, match="hd_convention must be one of .* got 'x'"):
        evaluate_folders(tmp_path, tmp_path, tmp_path / "o", hd_convention="x")
    with pytest.raises(InputError, match="PRED_DIR .*missing: not a directory"):
        evaluate_folders(tmp_path / "missing", tmp_path, tmp_path / "o")


def test_logs_report_to_mlflow(tmp_path, monkeypatch):
    # any tracking URI works; the file store keeps this test fast (SQLite migrations take seconds)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    pred, gt = _make_dataset(tmp_path / "d", n_cases=2)
    uri = (tmp_path / "mlruns").as_uri()
    summary = evaluate_folders(pred, gt, tmp_path / "e", tracking_uri=uri, experiment="ev", progress=False)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert "eval_dice_liver" in run.data.metrics and "eval_hd95_tumour" in run.data.metrics
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "evaluation")} == {
        "metrics.csv", "summary.json", "report.html"}


BRATS_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
REGIONS = {"whole_tumor": (1, 2, 3), "tumor_core": (2, 3), "enhancing_tumor": (3,)}


def _brats_like(root: Path, n_cases: int = 3) -> tuple[Path, Path]:
    """Nested boxes: edema 1 around core 2 around enhancing 3; predictions shifted, case 1 misses
    the enhancing part, case 2 adds a spurious enhancing blob (a second lesion)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"labels": BRATS_LABELS, "regions_class_order": [1, 2, 3]}))
    rng = np.random.default_rng(1)
    for i in range(n_cases):
        gt = np.zeros(SHAPE, np.uint8)
        gt[3:15, 3:14, 2:10] = 1
        gt[6:12, 6:11, 3:8] = 2
        gt[7:10, 7:10, 4:7] = 3
        pred = np.roll(gt, int(rng.integers(0, 2)), axis=int(rng.integers(0, 3)))
        if i == 1:
            pred[pred == 3] = 2
        if i == 2:
            pred[16:18, 15:17, 9:11] = 3
        _save(root / "labelsTs" / f"case_{i:03d}.nii.gz", gt)
        _save(root / "pred" / f"case_{i:03d}.nii.gz", pred)
    return root / "pred", root / "labelsTs"


def test_regions_match_an_independent_numpy_computation(tmp_path):
    from monai.metrics import compute_hausdorff_distance

    pred_dir, gt_dir = _brats_like(tmp_path / "d")
    summary = evaluate_folders(pred_dir, gt_dir, tmp_path / "e", regions=True, progress=False)
    assert summary["structures"] == "regions" and summary["regions"] == {k: list(v) for k, v in REGIONS.items()}
    assert [c["name"] for c in summary["classes"].values()] == list(REGIONS)
    rows = {(r["case"], r["name"]): r for r in csv.DictReader((tmp_path / "e" / "metrics.csv").open(encoding="utf-8"))}
    assert len(rows) == 3 * 3
    spacing = (0.8, 0.8, 2.5)
    for i in range(3):
        gt = np.asanyarray(nib.load(str(gt_dir / f"case_{i:03d}.nii.gz")).dataobj)
        pred = np.asanyarray(nib.load(str(pred_dir / f"case_{i:03d}.nii.gz")).dataobj)
        for name, values in REGIONS.items():
            g, p = np.isin(gt, values), np.isin(pred, values)
            row = rows[(f"case_{i:03d}", name)]
            inter = np.count_nonzero(g & p)
            assert float(row["dice"]) == pytest.approx(2 * inter / (g.sum() + p.sum()), rel=1e-5), (i, name)
            assert float(row["iou"]) == pytest.approx(inter / np.count_nonzero(g | p), rel=1e-5)
            if p.any():
                hd95 = compute_hausdorff_distance(p[None, None], g[None, None], percentile=95, spacing=spacing)
                assert float(row["hd95"]) == pytest.approx(float(hd95), rel=1e-5), (i, name)
            else:  # case 1 misses the enhancing region: worst distance (image diagonal)
                assert row["situation"] == "pred_empty" and float(row["dice"]) == 0.0


def test_regions_errors_name_the_flag(tmp_path):
    pred, gt = _make_dataset(tmp_path / "plain", n_cases=1)
    with pytest.raises(InputError, match=r"--regions: .*dataset.json defines no region labels"):
        evaluate_folders(pred, gt, tmp_path / "e", regions=True, progress=False)
    with pytest.raises(InputError, match="--labels and --regions cannot be combined"):
        evaluate_folders(pred, gt, tmp_path / "e", labels=[1], regions=True, progress=False)
    (tmp_path / "plain" / "dataset.json").unlink()
    with pytest.raises(InputError, match=r"--regions: no dataset.json in .* pass --dataset"):
        evaluate_folders(pred, gt, tmp_path / "e", regions=True, progress=False)
    # an explicit --dataset (folder or file) and a regions mapping both work
    other = tmp_path / "brats"
    other.mkdir()
    (other / "dataset.json").write_text(json.dumps({"labels": BRATS_LABELS, "regions_class_order": [1, 2, 3]}))
    summary = evaluate_folders(pred, gt, tmp_path / "e", regions=True, dataset=other, progress=False)
    assert list(summary["regions"]) == list(REGIONS)
    summary = evaluate_folders(pred, gt, tmp_path / "e", regions={"any": [1, 2]}, progress=False)
    assert summary["classes"]["1"]["name"] == "any"


def test_lesion_wise_outputs_per_region(tmp_path):
    pred_dir, gt_dir = _brats_like(tmp_path / "d")
    out = tmp_path / "e"
    summary = evaluate_folders(pred_dir, gt_dir, out, regions=True, lesion_wise=True, size_bins=[20, 200],
                               progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["lesions.csv", "metrics.csv", "report.html", "summary.json"]
    table = list(csv.DictReader((out / "lesions.csv").open(encoding="utf-8")))
    assert list(table[0]) == ["case", "label", "name", "status", "ref_lesion", "pred_lesion", "volume_mm3",
                              "ref_volume_mm3", "pred_volume_mm3", "iou", "dice", "hd95"]
    et = [r for r in table if r["name"] == "enhancing_tumor"]
    # one enhancing lesion per case (27 voxels * 1.6 mm^3 = 43.2 mm^3): found in cases 0 and 2,
    # missed in case 1 (FN); case 2 adds a spurious 2x2x2 blob (FP, 12.8 mm^3)
    assert [(r["case"], r["status"]) for r in et] == [("case_000", "TP"), ("case_001", "FN"),
                                                       ("case_002", "TP"), ("case_002", "FP")]
    assert float(et[1]["volume_mm3"]) == pytest.approx(43.2) and float(et[1]["hd95"]) == 374.0
    assert float(et[3]["volume_mm3"]) == pytest.approx(12.8)
    lesions = json.loads((out / "summary.json").read_text(encoding="utf-8"))["lesions"]
    et_summary = lesions["3"]
    assert (et_summary["tp"], et_summary["fp"], et_summary["fn"]) == (2, 1, 1)
    assert et_summary["f1"] == pytest.approx(4 / 6)  # 2 TP / (2 TP + FP + FN)
    assert [b["bin"] for b in et_summary["recall_by_size"]] == ["<20", "20-200", ">=200"]
    assert et_summary["recall_by_size"][1]["lesions"] == 3 and et_summary["recall_by_size"][1]["detected"] == 2
    # case 1 scores (0 + ...)/1 lesion = 0, so the mean lesion Dice is below the matched-lesion mean
    assert et_summary["lesion_dice"] < et_summary["matched_dice"]
    # whole tumour: found in every case; the spurious enhancing blob is outside it, a FP there too
    assert (lesions["1"]["tp"], lesions["1"]["fp"], lesions["1"]["fn"]) == (3, 1, 0)
    assert summary["lesion_settings"]["worst_distance_mm"] == 374.0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Lesion-wise detection" in page and "detection rate by lesion size" in page and "case_001" in page


def test_logs_into_an_existing_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    pred, gt = _make_dataset(tmp_path / "d", n_cases=2)
    uri = (tmp_path / "mlruns").as_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("train")).info.run_id
    summary = evaluate_folders(pred, gt, tmp_path / "e", tracking_uri=uri, run_id=run_id, lesion_wise=True,
                               progress=False)
    assert summary["mlflow_run_id"] == run_id and "mlflow_error" not in summary
    assert "eval_lesion_f1_tumour" in client.get_run(run_id).data.metrics
    assert mlflow.active_run() is None
    summary = evaluate_folders(pred, gt, tmp_path / "e", tracking_uri=uri, run_id="0" * 32, progress=False)
    assert "mlflow_run_id" not in summary and summary["mlflow_error"].startswith(uri)
    assert "mlflow_run_id" not in evaluate_folders(pred, gt, tmp_path / "e", progress=False)  # no flags: no MLflow
