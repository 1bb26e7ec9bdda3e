"""The bundle's ``docs/README.md`` (model card), ``docs/data_license.txt`` and ``LICENSE`` texts."""

from __future__ import annotations

from medseg.bundle.params import BundleParams

__all__ = ["bundle_readme", "data_license", "LICENSE_TEXT"]

LICENSE_TEXT = """Copyright (c) medseg contributors

Licensed under the Apache License, Version 2.0 (the "License"); you may not use the files of this
bundle except in compliance with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License
is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express
or implied. See the License for the specific language governing permissions and limitations under
the License.

The weights in models/ were trained on the data named in configs/metadata.json (data_source);
their use is also subject to that data's licence.
"""


def data_license(p: BundleParams) -> str:
    """``docs/data_license.txt``: the licence of the data the weights were trained on."""
    return f"""Data licence

Training data: {p.data_source}

{p.data_license}
"""


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "0"


def bundle_readme(p: BundleParams, provenance: str = "") -> str:
    """Model card: intended use, model, data, metrics, limitations, installation and the commands."""
    labels = "\n".join(f"| {k} | {v} |" for k, v in sorted(p.labels.items()))
    metrics = "\n".join(f"| {k} | {v if v is None else f'{v:.4f}'} |" for k, v in sorted(p.eval_metrics.items()))
    metrics_block = (f"| metric | value |\n| --- | --- |\n{metrics}\n" if metrics
                     else "No evaluation yet: run the evaluate config below.\n")
    medseg_version = _version_of("medseg")
    intensity = ("HU window " + str(list(p.hu_window)) + " scaled to [0, 1]" if p.modality.upper() == "CT"
                 else "z-score normalised")
    return f"""# {p.name}

{p.description}

{provenance}
## Intended use

Research on 3D {p.modality} segmentation ({", ".join(v for k, v in sorted(p.labels.items()) if k)}):
benchmarking, teaching, a starting point for fine-tuning. Not a medical device and not for
clinical decisions.

## Model

MONAI residual 3D U-Net (`medseg.plan.network.build_network`): channels {list(p.channels)}, strides
{list(p.strides)}, {p.num_res_units} residual unit(s), instance norm. Input: one {p.modality} channel resampled to
{list(p.pixdim)} mm in RAS orientation, {intensity};
patches of {list(p.patch_size)} voxels, sliding-window inference (Gaussian blending). Output: {p.num_classes} logit
channels, argmax = label:

| label | name |
| --- | --- |
{labels}

Loss: `{p.loss}` (medseg.losses).

## Data

Source: {p.data_source}. Licence: `docs/data_license.txt`. Layout: MSD (`dataset.json`) or
nnU-Net v2 raw; `--dataset_dir` points at the dataset folder (default: `data/` in this bundle).
The training / validation split is fold {p.fold} of {p.folds} (patient-wise, seed {p.seed}), the
same as `medseg train --fold {p.fold} --folds {p.folds} --seed {p.seed}`.

## Evaluation

{metrics_block}
Validation metrics are medseg's (`medseg.handlers.metrics`): Dice and HD95 in mm per class, the
empty-mask policy of `medseg.metrics.policy` (a missed or hallucinated structure scores Dice 0 and
HD95 = the image diagonal), HD95 convention "monai" -- the numbers `medseg evaluate` reports for
the same predictions.

## Limitations

- Trained and evaluated on the data above only; performance on other scanners, protocols,
  fields of view or populations is unknown.
- Validation metrics are computed on the pre-processed (resampled, cropped) grid.
- Small structures below the resampled voxel size ({list(p.pixdim)} mm) can be missed.

{_usage(medseg_version)}"""


def _usage(medseg_version: str) -> str:
    """Installation and the commands a bundle user runs (the same for every bundle medseg writes)."""
    return f"""## Installation

The configs name medseg components (`_target_: medseg....`): install medseg {medseg_version} or newer
(`configs/metadata.json`, `required_packages_version`) with the CPU or CUDA PyTorch you want:

    pip install "medseg>={medseg_version}"        # or, from a clone: pip install -e .
    pip install fire jsonschema                # for python -m monai.bundle and verify_metadata

`medseg bundle verify .` warns (MEDSEG-W008) when the installed medseg is older.

## Commands

Run from this folder (`bundle_root` is `.`; outputs go to `eval/` of the working folder,
`--output_dir` to change). No path in the bundle is absolute; weights and their hashes are listed in
`large_files.yml`. The configs hold wiring only (no `$` expressions).

    # train (writes models/model.pt, the best validation mean Dice)
    python -m monai.bundle run --config_file configs/train.json --dataset_dir /path/to/dataset

    # train with N processes: N GPUs (NCCL), or N CPU processes (Gloo) without CUDA
    torchrun --nproc_per_node N -m monai.bundle run \\
        --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir /path/to/dataset

    # track in MLflow (any tracking URI; default: a SQLite store under eval/)
    python -m monai.bundle run --config_file configs/train.json --dataset_dir /path/to/dataset \\
        --tracking mlflow --tracking_uri sqlite:///mlflow.db

    # evaluate models/model.pt on the validation fold (every metric in eval/metrics.csv)
    python -m monai.bundle run --config_file "['configs/train.json','configs/evaluate.json']" \\
        --dataset_dir /path/to/dataset

    # inference: the dataset's test images (or every NIfTI file of a folder) -> eval/<case>_seg.nii.gz
    python -m monai.bundle run --config_file configs/inference.json --dataset_dir /path/to/images

    # checks (offline: the schema is the local copy docs/meta_schema.json)
    python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath docs/meta_schema.json
    python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json \\
        --config_file configs/inference.json
    python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
        --meta_file configs/metadata.json --config_file configs/inference.json

    # all of the above checks, large_files.yml hashes, TorchScript-vs-eager equality and
    # medseg's warnings (MEDSEG-Wnnn), in one command
    medseg bundle verify .

`docs/meta_schema.json` accepts exactly what MONAI's published `meta_schema_20240725.json`
accepts; `verify_metadata` uses it and downloads nothing.
"""
