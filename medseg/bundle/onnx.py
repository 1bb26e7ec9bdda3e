"""ONNX export of a segmentation network, checked against eager PyTorch with ONNX Runtime.

:func:`export_onnx` writes one self-contained ``.onnx`` file (weights inside) with
``torch.onnx.export(dynamo=True)``, the ``torch.export``-based exporter that PyTorch maintains
(the TorchScript-based exporter is deprecated since PyTorch 2.9). The input ``image`` is
``(B, C_in, D, H, W)`` float32 and the output ``logits`` ``(B, num_classes, D, H, W)``.

Convention: dynamic axes. The batch axis and each spatial axis are exported as dynamic
(``torch.export.Dim.AUTO``) wherever the network allows; an axis the network's code fixes stays
static. :attr:`OnnxExport.dynamic_axes` says which axes came out dynamic. As in eager PyTorch,
a dynamic spatial size must still suit the network: a multiple of the product of its strides
(8 for medseg's default U-Net).

Opset 18 (:data:`OPSET`): the exporter's native opset, run by ONNX Runtime >= 1.14 and
TensorRT >= 8.6.

:func:`check_onnx` runs the file with ONNX Runtime's ``CPUExecutionProvider`` on random inputs
and reports the max absolute difference to the eager network (default tolerance 1e-4).
:func:`export_run_onnx` does both for a training run, for ``medseg bundle export --onnx``.

The packages ``onnx``, ``onnxruntime`` and ``onnxscript`` come with ``pip install "medseg[onnx]"``;
without them :func:`require_onnx` raises :class:`medseg.errors.InputError` saying so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medseg.errors import InputError

__all__ = [
    "OPSET",
    "ONNX_PACKAGES",
    "OnnxCheck",
    "OnnxExport",
    "check_onnx",
    "export_onnx",
    "export_run_onnx",
    "input_channels",
    "require_onnx",
]

logger = logging.getLogger(__name__)

OPSET = 18
ONNX_PACKAGES: tuple[str, ...] = ("onnx", "onnxruntime", "onnxscript")
INPUT_NAME, OUTPUT_NAME = "image", "logits"


@dataclass(frozen=True)
class OnnxExport:
    """An exported file: its path, opset and which input axes are dynamic.

    ``dynamic_axes`` lists the axes of ``image`` ``(B, C_in, D, H, W)`` that accept any size,
    e.g. ``(0, 2, 3, 4)`` for a dynamic batch and dynamic spatial sizes.
    """

    path: Path
    opset: int
    input_shape: tuple[int | str, ...]
    dynamic_axes: tuple[int, ...]


@dataclass(frozen=True)
class OnnxCheck:
    """ONNX Runtime against eager PyTorch on one input shape ``(B, C_in, *spatial)``."""

    shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


def require_onnx(flag: str = "--onnx") -> None:
    """Raise :class:`InputError` naming ``flag`` and the install command if an ONNX package is missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"{flag} needs the package(s) {', '.join(missing)}: install them with "
                         f"pip install \"medseg[onnx]\" (or pip install {' '.join(ONNX_PACKAGES)})")


def input_channels(network: torch.nn.Module) -> int:
    """``C_in`` of a convolutional network: ``in_channels`` of its first convolution."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            return int(module.in_channels)
    raise ValueError(f"network {type(network).__name__} has no convolution to read its input channels from")


def export_onnx(network: torch.nn.Module, path: str | Path, in_channels: int,
                example_spatial: Sequence[int], opset: int = OPSET) -> OnnxExport:
    """Write ``network`` to ``path`` as ONNX with dynamic batch and spatial axes where it allows.

    Args:
        network: a module mapping ``(B, in_channels, *spatial)`` float32 to logits
            ``(B, num_classes, *spatial)`` in eval mode (a MONAI ``UNet`` or ``DynUNet``, for
            instance); it is exported on the CPU, in eval mode, and left in its former mode and device.
        path: file to write (parents are created); the weights are stored inside it.
        in_channels: ``C_in``, number of input channels (>= 1).
        example_spatial: a spatial size the network accepts, e.g. its training patch size.
        opset: ONNX opset version (default :data:`OPSET`).

    Returns:
        :class:`OnnxExport` with the dynamic axes read back from the written file.
    """
    require_onnx("ONNX export")
    import onnx

    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels!r}")
    spatial = tuple(int(s) for s in example_spatial)
    if not spatial or min(spatial) < 1:
        raise ValueError(f"example_spatial must be positive sizes, got {tuple(example_spatial)!r}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # batch 2: torch.export specialises axes of size 1 to static
    example = torch.zeros(2, int(in_channels), *spatial)
    auto = torch.export.Dim.AUTO
    with _eval_on_cpu(network) as net, torch.no_grad(), _quiet_exporter():
        dynamic = {_first_argument(net): dict.fromkeys([0, *range(2, 2 + len(spatial))], auto)}
        torch.onnx.export(net, (example,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=int(opset), dynamo=True, dynamic_shapes=dynamic, external_data=False,
                          verbose=False)
    model = onnx.load(str(out), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in dims)
    axes = tuple(i for i, d in enumerate(shape) if isinstance(d, str))
    logger.info("ONNX opset %d written to %s (input %s, dynamic axes %s)", opset, out, shape, axes)
    return OnnxExport(out, int(opset), shape, axes)


def check_onnx(network: torch.nn.Module, path: str | Path, shapes: Sequence[Sequence[int]],
               tolerance: float = 1e-4, seed: int = 0) -> list[OnnxCheck]:
    """Max ``|ONNX Runtime - eager|`` of the logits on random inputs, one per input shape.

    Args:
        network: the eager module that was exported (run on the CPU in eval mode).
        path: the ``.onnx`` file.
        shapes: input shapes ``(B, C_in, *spatial)`` to try, e.g. ``[(2, 1, 96, 96, 96),
            (1, 1, 192, 96, 96)]``; shapes other than the export example need dynamic axes.
        tolerance: the ``ok`` threshold on the max absolute difference (logits, float32).
        seed: seed of the standard-normal inputs.
    """
    require_onnx("ONNX check")
    import onnxruntime as ort

    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(int(seed))
    results = []
    with _eval_on_cpu(network) as net, torch.no_grad():
        for shape in shapes:
            x = torch.randn(*(int(s) for s in shape), generator=generator)
            expected = net(x).numpy()
            got = session.run(None, {name: x.numpy()})[0]
            if got.shape != expected.shape:
                raise RuntimeError(f"{path}: ONNX output shape {got.shape} differs from eager {expected.shape}")
            results.append(OnnxCheck(tuple(x.shape), float(np.abs(got - expected).max()), float(tolerance)))
    return results


def export_run_onnx(run: str | Path, path: str | Path, tolerance: float = 1e-4) -> OnnxExport:
    """Export the network of a run directory or checkpoint to ``path`` and check it against eager.

    The network comes from :func:`medseg.inference.predict.load_model`; it is exported on its
    training patch size and checked on a batch of 2 patches and, where the axes are dynamic, on
    one patch twice as deep (a size the network accepts whenever it accepts the patch size).

    Raises:
        InputError: an ONNX package is missing (the message says how to install it).
        RuntimeError: ONNX Runtime and eager PyTorch differ by more than ``tolerance``.
    """
    from medseg.inference.predict import load_model

    require_onnx()
    loaded = load_model(run, torch.device("cpu"))
    channels = input_channels(loaded.network)
    patch = tuple(int(s) for s in loaded.plan.patch_size)
    exported = export_onnx(loaded.network, path, channels, patch)
    shapes = [(2, channels, *patch)]
    if set(exported.dynamic_axes) >= {0, 2}:
        shapes.append((1, channels, 2 * patch[0], *patch[1:]))
    checks = check_onnx(loaded.network, path, shapes, tolerance=tolerance)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise RuntimeError(f"{path}: ONNX Runtime differs from eager PyTorch by "
                           + ", ".join(f"{c.max_abs_diff:.3g} on {c.shape}" for c in bad)
                           + f" (tolerance {tolerance:g})")
    logger.info("ONNX == eager within %g on %s", tolerance, [c.shape for c in checks])
    return exported


@contextlib.contextmanager
def _eval_on_cpu(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    was_training = network.training
    param = next(network.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        yield network.to("cpu").eval()
    finally:
        network.to(device).train(was_training)


def _first_argument(network: torch.nn.Module) -> str:
    import inspect

    params = [p for p in inspect.signature(network.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        raise ValueError(f"{type(network).__name__}.forward takes no positional input")
    return params[0].name


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notices about optional torchvision operators (not used by 3D U-Nets) and
    about DynUNet's deep-supervision list, which eval mode leaves unused."""
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The tensor attributes .*heads.* were assigned during export")
            yield
    finally:
        quiet.setLevel(level)
