"""The bundle's ``docs/README.md`` and ``LICENSE`` texts."""

from __future__ import annotations

from medseg.bundle.template import BundleParams

__all__ = ["bundle_readme", "LICENSE_TEXT"]

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


def bundle_readme(p: BundleParams, provenance: str = "") -> str:
    """Model card: what the model does, data format, and the commands that train, evaluate, run, verify."""
    labels = "\n".join(f"| {k} | {v} |" for k, v in sorted(p.labels.items()))
    metrics = "\n".join(f"| {k} | {v if v is None else f'{v:.4f}'} |" for k, v in sorted(p.eval_metrics.items()))
    metrics_block = (f"| metric | value |\n| --- | --- |\n{metrics}\n" if metrics
                     else "No evaluation yet: run the evaluate config below.\n")
    return f"""# {p.name}

{p.description}

{provenance}
## Model

MONAI residual 3D U-Net (`medseg.engine.network.build_network`): channels {list(p.channels)}, strides
{list(p.strides)}, {p.num_res_units} residual unit(s), instance norm. Input: one {p.modality} channel resampled to
{list(p.pixdim)} mm in RAS orientation, {"HU window " + str(list(p.hu_window)) + " scaled to [0, 1]" if p.modality.upper() == "CT" else "z-score normalised"};
patches of {list(p.patch_size)} voxels, sliding-window inference (Gaussian blending). Output: {p.num_classes} logit
channels, argmax = label:

| label | name |
| --- | --- |
{labels}

Loss: `{p.loss}` (medseg.losses). Data: MSD (`dataset.json`) or nnU-Net v2 raw layout; the
training / validation split is fold {p.fold} of {p.folds} (patient-wise, seed {p.seed}), the same as
`medseg train --fold {p.fold} --folds {p.folds} --seed {p.seed}`.

## Evaluation

{metrics_block}
## Commands

Run from this folder (`bundle_root` is `.`); `--dataset_dir` points at any dataset folder.
The configs hold wiring only (no `$` expressions); custom parts are `_target_: medseg....`.

    # train (writes models/model.pt, the best validation mean Dice)
    python -m monai.bundle run --config_file configs/train.json --dataset_dir /path/to/dataset

    # train on N GPUs (NCCL) or N CPU processes (Gloo)
    torchrun --nproc_per_node N -m monai.bundle run \\
        --config_file "['configs/train.json','configs/multi_gpu_train.json']" --dataset_dir /path/to/dataset

    # evaluate models/model.pt on the validation fold (Dice, HD95; CSVs in eval/)
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

    # all of the above checks plus TorchScript-vs-eager equality, in one command
    medseg bundle verify .

`verify_metadata` would otherwise download the schema named in `metadata.json`; when the file given
as `--filepath` exists, MONAI uses it and downloads nothing. `docs/meta_schema.json` is the
project's own schema written from the MONAI Bundle Specification. `python -m monai.bundle`
needs the `fire` package and `verify_metadata` the `jsonschema` package.

## Intended use

Research only; not a medical device and not for clinical decisions.
"""
