"""Planned training through medseg's engine on whatever device exists, with and without AMP.

Synthesises a small CT dataset, plans it for the device (a GPU gets the DynUNet with deep
supervision), trains it for a few epochs with MONAI's SupervisedTrainer (float32, then AMP on CUDA)
through medseg's builders, and evaluates the same weights on CPU and on the device: the
validation metrics must agree. Needs no MLflow. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def _run(data: Path, out: Path, device: str, amp: bool, epochs: int) -> dict:
    from ignite.engine import Events

    from medseg.data.datalist import load_dataset
    from medseg.plan.network import network_from_plan
    from medseg.training.builders import build_data, build_evaluator, build_loss, build_trainer
    from medseg.training.train import TrainConfig, prepare_plan

    cfg = TrainConfig(data=str(data), out=str(out), epochs=epochs, device=device, amp=amp, progress=False,
                      check_data=False)
    dataset = load_dataset(data)
    plan = prepare_plan(cfg, dataset)
    dev = torch.device(device)
    loss, engine_loss, key = build_loss(cfg, plan)
    run_data = build_data(cfg, plan, dataset, key)
    torch.manual_seed(0)
    net = network_from_plan(plan.network, plan.in_channels, plan.out_channels).to(dev)
    evaluator = build_evaluator(plan, net, run_data.val_loader, dev, amp)
    trainer, _, _ = build_trainer(cfg, net, engine_loss, run_data.train_loader, evaluator, dev, amp, key)
    times: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: times.append(time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: times.append(time.perf_counter() - times.pop()))
    trainer.run()
    result = {"device": device, "amp": amp, "network": plan.network.name, "deep_supervision": plan.network.deep_supervision,
              "patch": list(plan.patch_size), "filters": list(plan.network.filters),
              "epoch_seconds": [round(t, 3) for t in times], "final_loss": float(trainer.state.output[0]["loss"])
              if isinstance(trainer.state.output, list) else float(trainer.state.output["loss"]),
              "val_mean_dice": float(evaluator.state.metrics["mean_dice"])}
    if dev.type == "cuda":  # the same weights evaluated on the CPU
        cpu_net = network_from_plan(plan.network, plan.in_channels, plan.out_channels)
        cpu_net.load_state_dict({k: v.cpu() for k, v in net.state_dict().items()})
        cpu_eval = build_evaluator(plan, cpu_net, run_data.val_loader, torch.device("cpu"), False)
        cpu_eval.run()
        fp32 = build_evaluator(plan, net, run_data.val_loader, dev, False)
        fp32.run()
        result["cpu_vs_cuda_fp32"] = {k: abs(float(cpu_eval.state.metrics[k]) - float(fp32.state.metrics[k]))
                                      for k in cpu_eval.state.metrics if isinstance(cpu_eval.state.metrics[k], float)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    from medseg.data.synth import SynthConfig, synthesise_dataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesise_dataset(data, SynthConfig(train_cases=8, test_cases=1, size=args.size, seed=3))
        for amp in ([False, True] if device == "cuda" else [False]):
            rows.append(_run(data, Path(tmp) / f"run-{amp}", device, amp, args.epochs))
    print(json.dumps({"cuda": device == "cuda", "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
