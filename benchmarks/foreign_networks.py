"""A network trained in lava-dl (slayer), then checked and run by dpap-deploy as a lava-dl user would.

Trains a slayer CUBA network on the bundled digits (64 -> 128 -> 10, rate-coded input, ``T`` steps;
``Dense`` blocks with a bias (slayer's ``MeanOnlyBatchNorm``) and, by default, learnable axonal delays
on the hidden layer), writes it with the blocks' own ``export_hdf5`` (lava-dl's tutorials' way), then
runs ``dpap-export --target loihi-sim --from slayer_digits.net --data digits`` (the pipeline's Python
API): our reader, Lava export, emulator, mapper and report, with lava-dl's own ``netx.hdf5.Network``
as the reference. Prints one JSON line: slayer's own accuracy (its float training network on the
same test spikes), lava-dl netx's and our Lava run's accuracy, the fraction of output spike entries
equal between them (every sample, every step), the emulator's, cores on ``--profile``, and times.

    .venv/bin/python benchmarks/foreign_networks.py --epochs 20            # about 6 min on 1 CPU thread
    .venv/bin/python benchmarks/foreign_networks.py --epochs 2 --max-test 40 --no-delay   # smoke run

Results are appended to ``benchmarks/foreign_networks_results.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import lava.magma.core.process.process  # noqa: F401  (Lava fixes the fork start method before torch does)
import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
NEURON = {"threshold": 1.25, "current_decay": 0.25, "voltage_decay": 0.03, "tau_grad": 0.03, "scale_grad": 3,
          "requires_grad": True}


def build(delay: bool):
    """slayer ``Dense`` blocks 64 -> 128 -> 10 (bias through ``MeanOnlyBatchNorm``; axonal delays on the
    hidden block's output when ``delay``)."""
    import lava.lib.dl.slayer as slayer

    hidden = dict(NEURON, norm=slayer.neuron.norm.MeanOnlyBatchNorm)
    return torch.nn.ModuleList([
        slayer.block.cuba.Dense(hidden, 64, 128, weight_norm=True, delay=delay),
        slayer.block.cuba.Dense(NEURON, 128, 10, weight_norm=True),
    ])


def forward(blocks, x):
    for b in blocks:
        x = b(x)
    return x


def train(blocks, x_train, y_train, T: int, epochs: int, seed: int, log) -> None:
    """slayer's rate loss (``SpikeRate``: 0.2 for the true class, 0.03 for the others) with Adam; the
    input is re-encoded every epoch (``(N, 64, T)``, slayer's time-last layout)."""
    import lava.lib.dl.slayer as slayer

    from dpap_deploy.data.encoding import rate_encode

    loss_fn = slayer.loss.SpikeRate(true_rate=0.2, false_rate=0.03, reduction="sum")
    opt = torch.optim.Adam(blocks.parameters(), lr=1e-3)
    y = torch.from_numpy(y_train).long()
    for ep in range(epochs):
        blocks.train()
        spikes = torch.from_numpy(rate_encode(x_train, T, seed + ep)).permute(1, 2, 0).contiguous()  # (N, F, T)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + ep))
        total = 0.0
        for k in range(0, len(y), 32):
            idx = order[k:k + 32]
            out = forward(blocks, spikes[idx])
            loss = loss_fn(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            for b in blocks:
                if getattr(b, "delay", None) is not None:
                    b.delay.clamp()  # keep delays >= 0, as slayer's tutorials do
            total += float(loss)
        log(f"epoch {ep + 1}/{epochs}: loss {total / len(y):.4f}")


def slayer_accuracy(blocks, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """slayer's own (float) network on the test spikes ``(T, N, F)`` the export is run on."""
    blocks.eval()
    with torch.no_grad():
        out = forward(blocks, torch.from_numpy(np.ascontiguousarray(x_test, np.float32)).permute(1, 2, 0).contiguous())
    return float((out.sum(dim=-1).argmax(dim=1).numpy() == y_test).mean())


def export(blocks, path: str) -> None:
    with h5py.File(path, "w") as f:
        layer = f.create_group("layer")
        for i, b in enumerate(blocks):
            b.export_hdf5(layer.create_group(f"{i}"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--time-steps", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--profile", default="loihi2")
    p.add_argument("--no-delay", action="store_true", help="no axonal delays in the hidden block")
    p.add_argument("--out", default=os.path.join(HERE, "foreign_networks_results.jsonl"))
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    from dpap_deploy.data import DataRequest, load_data
    from dpap_deploy.pipeline import RunConfig, run_pipeline

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    ds = load_data("digits", DataRequest(args.time_steps, args.seed, 0.2))
    blocks = build(delay=not args.no_delay)
    t0 = time.perf_counter()
    train(blocks, ds.x_train, ds.y_train, args.time_steps, args.epochs, args.seed, log)
    t_train = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="dpap-foreign-") as d:
        net = os.path.join(d, "slayer_digits.net")
        export(blocks, net)
        cfg = RunConfig.from_options(target="loihi-sim", from_dir=net, data="digits", time_steps=args.time_steps,
                                     seed=args.seed, max_test=args.max_test, profile=args.profile,
                                     out=os.path.join(d, "run"), quiet=True)
        t1 = time.perf_counter()
        ctx = run_pipeline(cfg)
        rep = ctx.report
        row = {"network": "slayer cuba 64-128-10" + ("" if args.no_delay else " + delays"), "epochs": args.epochs,
               "time_steps": args.time_steps, "seed": args.seed, "n_test": rep["dataset"]["n_test"],
               "slayer_float": slayer_accuracy(blocks, ctx.x_test, ctx.y_test),
               "lava_dl_netx": rep["accuracy"].get("lava_dl_netx"), "lava": rep["accuracy"].get("lava"),
               "emulator": rep["accuracy"].get("emulator"),
               "reference_spikes_equal": rep["agreement"].get("reference_spikes"),
               "emulator_spikes_equal": rep["agreement"].get("spikes"),
               "delays": [int(np.max(l.delay)) if l.delay is not None else None for l in ctx.ir.layers],
               "profile": args.profile, "cores": rep["resources"]["cores_used"],
               "cores_lower_bound": rep["resources"]["cores_lower_bound"], "synapses": rep["model"]["synapses"],
               "train_s": round(t_train, 1), "run_s": round(time.perf_counter() - t1, 1)}
    print(json.dumps(row))
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
