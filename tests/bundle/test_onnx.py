"""ONNX export: ONNX Runtime equals eager PyTorch (1e-4) on a U-Net and a DynUNet, at two input sizes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from medseg.cli.main import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from medseg.bundle.onnx import OPSET, check_onnx, export_onnx, input_channels  # noqa: E402


def _unet(in_channels: int) -> torch.nn.Module:
    from medseg.plan.network import build_network

    return build_network(3, in_channels=in_channels, channels=(8, 16, 32), strides=(2, 2))


def _dynunet(in_channels: int) -> torch.nn.Module:
    from monai.networks.nets import DynUNet

    # deep supervision on: in eval mode DynUNet still returns the full-resolution logits alone
    return DynUNet(3, in_channels, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                   filters=[8, 16, 32], norm_name="instance", deep_supervision=True, deep_supr_num=1)


@pytest.mark.parametrize("make,in_channels", [(_unet, 1), (_dynunet, 2)], ids=["unet", "dynunet-2ch"])
def test_onnx_equals_eager_at_two_sizes(tmp_path, make, in_channels):
    torch.manual_seed(0)
    net = make(in_channels)
    net.train()  # the exporter evaluates in eval mode and gives the module back as it found it
    exported = export_onnx(net, tmp_path / "model.onnx", input_channels(net), (16, 16, 16))
    assert net.training
    assert input_channels(net) == in_channels
    assert exported.opset == OPSET and exported.dynamic_axes == (0, 2, 3, 4)
    assert exported.input_shape[1] == in_channels
    assert not list(tmp_path.glob("*.data"))  # weights inside the one file
    # the export size, and a different batch and spatial size (both strides divide 4)
    checks = check_onnx(net, exported.path, [(2, in_channels, 16, 16, 16), (1, in_channels, 24, 16, 32)])
    assert [c.shape for c in checks] == [(2, in_channels, 16, 16, 16), (1, in_channels, 24, 16, 32)]
    for c in checks:
        assert c.ok and 0 <= c.max_abs_diff <= 1e-4, c


def test_check_detects_a_network_that_differs_from_the_file(tmp_path):
    torch.manual_seed(0)
    net = _unet(1)
    export_onnx(net, tmp_path / "model.onnx", 1, (16, 16, 16))
    with torch.no_grad():
        next(net.parameters()).add_(0.5)  # the eager network moves, the file does not
    (check,) = check_onnx(net, tmp_path / "model.onnx", [(1, 1, 16, 16, 16)])
    assert check.max_abs_diff > 1e-3 and not check.ok


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="in_channels must be >= 1, got 0"):
        export_onnx(_unet(1), tmp_path / "m.onnx", 0, (16, 16, 16))
    with pytest.raises(ValueError, match=r"example_spatial must be positive sizes, got \(16, 0, 16\)"):
        export_onnx(_unet(1), tmp_path / "m.onnx", 1, (16, 0, 16))


def test_missing_onnx_packages_give_a_clear_error(tmp_path):
    # a None entry in sys.modules is Python's way of making a package unimportable
    code = ("import sys; sys.modules['onnxruntime'] = None; from medseg.cli.main import main; "
            f"sys.exit(main(['bundle', 'export', {str(tmp_path)!r}, {str(tmp_path / 'out')!r}, '--onnx']))")
    (tmp_path / "config.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--onnx needs the package(s) onnxruntime" in proc.stderr
    assert 'pip install "medseg[onnx]"' in proc.stderr


@pytest.mark.slow
def test_bundle_export_writes_a_matching_onnx(tmp_path, tiny_run, capsys):
    import onnxruntime as ort

    from medseg.inference.predict import load_model

    out = tmp_path / "bundle"
    assert main(["bundle", "export", str(tiny_run.run_dir), str(out), "--onnx", "--no-torchscript"]) == 0
    path = out / "models" / "model.onnx"
    assert path.is_file() and not (out / "models" / "model.ts").exists()
    # an independent read: ONNX Runtime on the bundle's file against the run's best network
    net = load_model(tiny_run.run_dir, torch.device("cpu")).network
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for shape in [(2, 1, 16, 16, 16), (1, 1, 32, 16, 24)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
def test_export_run_onnx_matches_the_run_network(tmp_path, tiny_run):
    import onnxruntime as ort

    from medseg.bundle.onnx import export_run_onnx
    from medseg.inference.predict import load_model

    exported = export_run_onnx(tiny_run.run_dir, tmp_path / "model.onnx")
    assert exported.dynamic_axes == (0, 2, 3, 4) and exported.input_shape[1] == 1
    net = load_model(tiny_run.run_dir, torch.device("cpu")).network
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 24, 16, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = net(x).numpy()
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4
