"""Static features into a spiking network: rate coding against current (bias) encoding, with a plain
ANN as the baseline, on scikit-learn's bundled tables other than the digits (issue 13).

Every run goes through the whole pipeline (``dpap_deploy.deploy``): DPAP training, export,
Lava's fixed-point simulator (SNNs, ``loihi-sim``; current encoding as the first population's
bias) or onnxruntime (the ANN, ``onnx``), the emulator's agreement with Lava, and the mapping.
One JSON line per run is appended to ``benchmarks/encodings_results.jsonl``.

Usage::

    .venv/bin/python benchmarks/encodings.py [--data wine,breast-cancer] [--seeds 0,1,2] [--epochs 60]
        [--hidden 32] [--time-steps 16] [--lr 0.01] [--out runs/bench-encodings] [--table]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "encodings_results.jsonl")
VARIANTS = {  # name: (model family, encoding, target)
    "ann": ("ann-mlp", "rate", "onnx"),
    "snn-rate": ("snn-mlp", "rate", "loihi-sim"),
    "snn-current": ("snn-mlp", "current", "loihi-sim"),
}


def run_one(data: str, variant: str, seed: int, args) -> dict:
    import dpap_deploy

    model, encoding, target = VARIANTS[variant]
    out = os.path.join(args.out, f"{data}-{variant}-{seed}")
    t0 = time.perf_counter()
    rep = dpap_deploy.deploy(model=model, data=data, target=target, out=out, force=True, encoding=encoding,
                             epochs=args.epochs, hidden=args.hidden, lr=args.lr, seed=seed,
                             time_steps=args.time_steps, batch_size=args.batch_size,
                             pruner="dpap")  # the pruner these figures were measured with (the default then)
    acc = rep["accuracy"]
    return {"data": data, "variant": variant, "seed": seed, "epochs": args.epochs, "hidden": args.hidden,
            "T": rep["dataset"]["time_steps"], "float": acc.get("norse", acc.get("torch")),
            "deployed": acc.get("lava", acc.get("onnxruntime")), "emulator": acc.get("emulator"),
            "spikes_equal": rep["agreement"].get("spikes"), "sparsity": rep["model"]["sparsity"],
            "neurons": rep["model"]["neurons"], "synapses": rep["model"]["synapses"],
            "synops_per_sample": (rep.get("energy") or {}).get("synops_per_sample", {}).get("norse"),
            "seconds": round(time.perf_counter() - t0, 1)}


def table(rows) -> str:
    """Mean ± standard deviation over seeds, per data set and variant."""
    out = ["| data | variant | float accuracy % | deployed accuracy % (Lava / onnxruntime) | Lava = emulator spikes "
           "| synapse sparsity % | synops per sample |", "|---|---|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["data"], r["variant"]) for r in rows}, key=lambda k: (k[0], list(VARIANTS).index(k[1])))
    for data, variant in keys:
        rs = [r for r in rows if r["data"] == data and r["variant"] == variant]

        def ms(key, scale=100.0):
            v = [scale * r[key] for r in rs if r.get(key) is not None]
            if not v:
                return "-"
            return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

        eq = [r["spikes_equal"] for r in rs if r.get("spikes_equal") is not None]
        syn = [r["synops_per_sample"] for r in rs if r.get("synops_per_sample") is not None]
        out.append(f"| {data} | {variant} | {ms('float')} | {ms('deployed')} | "
                   f"{f'{100 * min(eq):.2f} %' if eq else '-'} | {ms('sparsity')} | "
                   f"{f'{statistics.mean(syn):,.0f}' if syn else '-'} |")
    return "\n".join(out) + f"\n\n({len(rows)} runs, {len({r['seed'] for r in rows})} seeds)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="wine,breast-cancer")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--hidden", default="32")
    p.add_argument("--time-steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--out", default="runs/bench-encodings")
    p.add_argument("--table", action="store_true", help="only print the table of the results file")
    args = p.parse_args(argv)
    if not args.table:
        for data in args.data.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for variant in args.variants.split(","):
                    row = run_one(data, variant, seed, args)
                    print(json.dumps(row), flush=True)
                    with open(RESULTS, "a") as f:
                        f.write(json.dumps(row) + "\n")
    rows = [json.loads(l) for l in open(RESULTS)] if os.path.isfile(RESULTS) else []
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
