"""medseg: MONAI-based 3D segmentation for CT and MRI.

Layers (dependencies point down only; ``tests/test_structure.py`` enforces them)::

    cli/                                   argument parsing, printing
    study/  bundle/                        the loss study; MONAI bundles
    evaluation/                            metrics reports, cross-validation
    training/  inference/                  ignite training workflow; prediction, ensembles, post-processing
    preprocessing/  handlers/              plan -> transform pipelines; ignite handlers, MLflow
    plan/                                  fingerprint, plan, the planned network
    data/                                  dataset reader, checks, synthetic data
    io/                                    DICOM in and out
    losses/  metrics/  transforms/  utils/ pure computation (torch, numpy, scipy, monai)
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
