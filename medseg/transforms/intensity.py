"""Per-channel intensity normalisation from a plan (CT: clip + dataset z-score; MRI: per-case z-score).

Formula, channel ``c``:

- ``ct``: ``(clip(x, lower, upper) - mean) / std`` with the dataset's foreground 0.5/99.5 percentiles,
  mean and std (nnU-Net's CTNormalization);
- ``zscore``: ``(x - mean_m) / std_m`` over the voxels ``m`` where the channel is nonzero, zero
  elsewhere (nnU-Net's ZScoreNormalization with the nonzero mask; MONAI ``NormalizeIntensity``
  with ``nonzero=True``).
- ``none``: unchanged.

:class:`ClipChannelsd` clamps each channel to a window in normalised units: training augmentation ends
with it on CT (the window is the plan's ``[lower, upper]`` HU clip, normalised), so an offset, noise or
contrast change drawn on the normalised patch is clipped as the same change in Hounsfield units would be
by the normalisation at inference.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["normalize_channels", "NormalizeChannels", "NormalizeChannelsd", "ClipChannelsd", "ct_windows",
           "SCHEMES"]

SCHEMES = ("ct", "zscore", "none")


def _scheme(norm: Any) -> dict[str, Any]:
    raw = dict(norm) if isinstance(norm, Mapping) else {k: getattr(norm, k) for k in
                                                        ("scheme", "lower", "upper", "mean", "std")}
    if raw.get("scheme") not in SCHEMES:
        raise ValueError(f"normalisation scheme must be one of {SCHEMES}, got {raw.get('scheme')!r}")
    if raw["scheme"] == "ct" and any(raw.get(k) is None for k in ("lower", "upper", "mean", "std")):
        raise ValueError(f"ct normalisation needs lower, upper, mean and std, got {raw!r}")
    return raw


def normalize_channels(image: torch.Tensor, norms: Sequence[Any]) -> torch.Tensor:
    """Normalise each channel of ``image`` ``(C, *spatial)`` by ``norms[c]`` (``ChannelNorm`` or dict).

    Returns a float32 tensor of the same shape (and type: a ``MetaTensor`` stays one).
    """
    if image.shape[0] != len(norms):
        raise ValueError(f"image has {image.shape[0]} channel(s) but {len(norms)} normalisation(s) are given")
    out = image.clone().float() if isinstance(image, torch.Tensor) else torch.as_tensor(image).float()
    for c, norm in enumerate(norms):
        n = _scheme(norm)
        x = out[c]
        if n["scheme"] == "ct":
            out[c] = (x.clamp(float(n["lower"]), float(n["upper"])) - float(n["mean"])) / float(n["std"])
        elif n["scheme"] == "zscore":
            mask = x != 0
            if mask.any():
                v = x[mask]
                std = v.std(unbiased=False)
                out[c] = torch.where(mask, (x - v.mean()) / (std if std > 0 else 1.0), torch.zeros_like(x))
    return out


class NormalizeChannels(Transform):
    """Array transform of :func:`normalize_channels`."""

    def __init__(self, norms: Sequence[Any]) -> None:
        self.norms = [_scheme(n) for n in norms]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return normalize_channels(image, self.norms)


class NormalizeChannelsd(MapTransform):
    """Dictionary wrapper of :class:`NormalizeChannels`."""

    def __init__(self, keys: KeysCollection, norms: Sequence[Any], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NormalizeChannels(norms)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


def ct_windows(norms: Sequence[Any]) -> list[list[float]] | None:
    """Each channel's CT clip ``[lower, upper]`` in normalised units, or ``None`` when a channel is not ``ct``."""
    out = []
    for norm in norms:
        n = _scheme(norm)
        if n["scheme"] != "ct":
            return None
        std = float(n["std"])
        out.append([round((float(n["lower"]) - float(n["mean"])) / std, 6),
                    round((float(n["upper"]) - float(n["mean"])) / std, 6)])
    return out


class ClipChannelsd(MapTransform):
    """Clamp channel ``c`` of each key ``(C, *spatial)`` to ``windows[c] = [low, high]``."""

    def __init__(self, keys: KeysCollection, windows: Sequence[Sequence[float]], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.low, self.high = torch.tensor([[float(w[0]), float(w[1])] for w in windows]).T

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            if x.shape[0] != len(self.low):
                raise ValueError(f"{key}: {x.shape[0]} channel(s) but {len(self.low)} clip window(s)")
            shape = (-1,) + (1,) * (x.ndim - 1)  # one bound per channel, broadcast over the voxels
            d[key] = torch.clamp(x, self.low.to(x.dtype).view(shape), self.high.to(x.dtype).view(shape))
        return d
