"""MONAI transform pipelines for training, validation and inference.

The deterministic pre-processing (load, channel first, RAS orientation, resampling, intensity
normalisation, foreground crop) is shared by all three; inference inverts its spatial steps with
:class:`monai.transforms.Invertd` so predicted masks land on the input's voxel grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monai import transforms as mt

__all__ = ["PipelineConfig", "preprocessing", "train_transforms", "val_transforms", "inference_transforms"]


@dataclass(frozen=True)
class PipelineConfig:
    """Pre-processing and augmentation settings.

    Attributes:
        pixdim: target voxel spacing in mm after resampling (x, y, z), RAS.
        patch_size: training patch / sliding-window ROI size in voxels.
        num_classes: output channels including background.
        modality: "CT" windows Hounsfield units to [0, 1]; anything else is z-score normalised.
        hu_window: (low, high) HU window for CT.
        samples_per_case: patches drawn per cached case per iteration.
        class_ratios: sampling ratio per class for RandCropByLabelClassesd (None: uniform).
        distance_map_key: when set, a per-class signed distance map is computed once per case
            (after resampling, before cropping) under this key and cropped/flipped with the label.
    """

    pixdim: tuple[float, float, float] = (1.6, 1.6, 2.5)
    patch_size: tuple[int, int, int] = (48, 48, 32)
    num_classes: int = 3
    modality: str = "CT"
    hu_window: tuple[float, float] = (-250.0, 350.0)
    samples_per_case: int = 2
    class_ratios: tuple[float, ...] | None = None
    distance_map_key: str | None = None


def _intensity(cfg: PipelineConfig) -> mt.MapTransform:
    if cfg.modality.upper() == "CT":
        lo, hi = cfg.hu_window
        return mt.ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    return mt.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)


def preprocessing(cfg: PipelineConfig, keys: Sequence[str] = ("image", "label")) -> list[mt.Transform]:
    """Deterministic steps shared by training, validation and inference (invertible)."""
    keys = list(keys)
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    return [
        mt.LoadImaged(keys=keys, image_only=True),
        mt.EnsureChannelFirstd(keys=keys),
        mt.EnsureTyped(keys=keys, dtype=None, track_meta=True),
        mt.Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        mt.Spacingd(keys=keys, pixdim=cfg.pixdim, mode=modes),
        _intensity(cfg),
        mt.CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
    ]


def _distance_map(cfg: PipelineConfig) -> list[mt.Transform]:
    if cfg.distance_map_key is None:
        return []
    from medseg.transforms import SignedDistanceMapd

    return [SignedDistanceMapd(keys="label", num_classes=cfg.num_classes, output_keys=cfg.distance_map_key)]


def train_transforms(cfg: PipelineConfig) -> mt.Compose:
    """Pre-processing, then class-balanced patch sampling and augmentation.

    Everything up to the first random transform is cached by CacheDataset (including the signed
    distance map when configured), so each epoch only pays for cropping and augmentation.
    """
    spatial = ["image", "label"] + ([cfg.distance_map_key] if cfg.distance_map_key else [])
    interp = ["bilinear", "nearest"] + (["bilinear"] if cfg.distance_map_key else [])
    ratios = list(cfg.class_ratios) if cfg.class_ratios else [1.0] * cfg.num_classes
    return mt.Compose([
        *preprocessing(cfg),
        mt.SpatialPadd(keys=["image", "label"], spatial_size=cfg.patch_size),
        *_distance_map(cfg),
        mt.RandCropByLabelClassesd(keys=spatial, label_key="label", spatial_size=cfg.patch_size,
                                   ratios=ratios, num_classes=cfg.num_classes,
                                   num_samples=cfg.samples_per_case, warn=False),
        mt.RandFlipd(keys=spatial, prob=0.5, spatial_axis=0),
        mt.RandFlipd(keys=spatial, prob=0.5, spatial_axis=1),
        mt.RandRotate90d(keys=spatial, prob=0.25, spatial_axes=(0, 1)),
        mt.RandAffined(keys=spatial, prob=0.2, rotate_range=(0.0, 0.0, 0.26), scale_range=(0.1, 0.1, 0.1),
                       mode=interp, padding_mode="border"),
        mt.RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
        mt.RandShiftIntensityd(keys="image", offsets=0.05, prob=0.3),
        mt.RandGaussianNoised(keys="image", std=0.02, prob=0.2),
        mt.EnsureTyped(keys=spatial, track_meta=False),
    ])


def val_transforms(cfg: PipelineConfig) -> mt.Compose:
    """Deterministic pre-processing of image and label; whole volumes for sliding-window validation."""
    return mt.Compose(preprocessing(cfg))


def inference_transforms(cfg: PipelineConfig) -> mt.Compose:
    """Pre-processing of the image alone; its spatial steps are inverted on the prediction."""
    return mt.Compose(preprocessing(cfg, keys=("image",)))
