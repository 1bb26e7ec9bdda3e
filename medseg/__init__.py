"""medseg: MONAI-based 3D segmentation for CT and MRI.

Layers (dependencies point down only)::

    cli/                          argument parsing, printing
    engine/  bundle/              training, inference, evaluation workflows
    handlers/  data/              ignite handlers, MLflow wiring, datasets and pipelines
    losses/  metrics/  transforms/   pure computation (torch, numpy, scipy, monai)
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
