"""DPAP against dense training and gradual global magnitude pruning, side by side.

For each model (SNN MLP on rate-coded digits, conv SNN on event-digits, ANN MLP on digits)
and each seed, on the same split and epochs: (1) dense, (2) DPAP, (3) gradual global L1
magnitude pruning (``torch.nn.utils.prune.global_unstructured``) of the same layers to
DPAP's final sparsity of that seed. Reports test accuracy, synapses and neurons remaining
(% of dense, hidden layers = every layer but the output), training wall time and, for SNNs,
spikes per test sample.

    python benchmarks/dpap_digits.py                      # small defaults, 3 seeds
    python benchmarks/dpap_digits.py --models snn-mlp --epochs 60 --seeds 5
    python benchmarks/dpap_digits.py --models snn-cnn --nmnist ~/data/NMNIST --per-class 100   # real N-MNIST on disk

"Epochs to dense best" is the paper's speed-up measure (docs/dpap.md sec. 12): the first epoch
(1-based) at which a run's test accuracy reaches the best test accuracy of the dense run of the
same seed; runs that never reach it are counted apart.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from dpap_deploy.data import load_digits
from dpap_deploy.data.event_digits import load_event_digits
from dpap_deploy.data.nmnist import load_nmnist
from dpap_deploy.train.dpap import PRESETS
from dpap_deploy.train.loop import TrainConfig, encoder_for, spikes_per_sample, test_inputs, train
from dpap_deploy.train.models import ANNMLP, SpikingCNN, SpikingMLP

SETUPS = {
    # constants: the ``cifar-snn`` preset (docs/dpap.md sec. 11.2: FC 1.5/2/13, conv channels 0.65/5/12, R init 10);
    # lr 2e-2 / 1e-2 after the sweep in benchmarks/README.md (pruned networks recover better at a higher lr)
    "snn-mlp": dict(data="digits", epochs=60, T=16, lr=2e-2, preset="cifar-snn",
                    make=lambda ds: SpikingMLP([64, 128, 64, 10])),
    "snn-cnn": dict(data="event-digits", epochs=30, T=10, lr=1e-2, preset="cifar-snn",
                    make=lambda ds: SpikingCNN(ds.x_train.shape[2:], (8, 16), (64,), ds.n_classes)),
    "ann-mlp": dict(data="digits", epochs=60, T=1, lr=1e-2, preset="cifar-snn",
                    make=lambda ds: ANNMLP([64, 128, 64, 10])),
}


def hidden_counts(model):
    """Synapses and neurons of the hidden layers (every layer but the output)."""
    hidden = range(len(model.layers) - 1)
    return sum(int(model.masks[l].sum()) for l in hidden), sum(model.widths()[l] for l in hidden)


def run_one(name, setup, ds, seed, method, target=0.0):
    torch.manual_seed(seed)
    model = setup["make"](ds)
    dense_syn, dense_neu = hidden_counts(model)
    cfg = TrainConfig(epochs=setup["epochs"], time_steps=setup["T"], seed=seed, lr=setup["lr"])
    res = train(ds, cfg, PRESETS[setup["preset"]], progress=False, model=model,
                method=method, target_sparsity=target)
    m = res.model
    syn, neu = hidden_counts(m)
    out = {"model": name, "method": method, "seed": seed, "accuracy": res.history[-1]["test_accuracy"],
           "hidden_synapses_pct": 100 * syn / dense_syn, "hidden_neurons_pct": 100 * neu / dense_neu,
           "train_s": res.seconds, "epochs": setup["epochs"],
           "best_epoch_accuracy": max(h["test_accuracy"] for h in res.history),
           "curve": [h["test_accuracy"] for h in res.history]}
    if m.spiking:
        x_test = test_inputs(ds, encoder_for(ds, m, cfg), seed)
        out["spikes_per_sample"] = spikes_per_sample(m, x_test)
    return out


def epochs_to(curve, level):
    """First epoch (1-based) whose accuracy reaches ``level``, or None."""
    return next((i + 1 for i, a in enumerate(curve) if a >= level - 1e-12), None)


def fmt(vals, digits=2):
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table(results):
    rows = ["| model | method | accuracy % | hidden synapses % | hidden neurons % | train s | spikes / sample "
            "| epochs to dense best (runs reaching it) |",
            "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["model"] for r in results):
        for method in ("dense", "dpap", "magnitude"):
            rs = [r for r in results if r["model"] == name and r["method"] == method]
            if not rs:
                continue
            sp = fmt([r["spikes_per_sample"] for r in rs], 0) if "spikes_per_sample" in rs[0] else "-"
            rows.append(f"| {name} | {method} | {fmt([100 * r['accuracy'] for r in rs])} | "
                        f"{fmt([r['hidden_synapses_pct'] for r in rs], 1)} | {fmt([r['hidden_neurons_pct'] for r in rs], 1)} | "
                        f"{fmt([r['train_s'] for r in rs], 1)} | {sp} | {_reach(rs)} |")
    return "\n".join(rows)


def _reach(rs):
    hit = [r["epochs_to_dense_best"] for r in rs if r.get("epochs_to_dense_best") is not None]
    return f"{fmt(hit, 1) if hit else '-'} ({len(hit)}/{len(rs)})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="snn-mlp,snn-cnn,ann-mlp")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="override every model's epochs")
    p.add_argument("--nmnist", metavar="ROOT", help="train the conv SNN on real N-MNIST read from ROOT "
                   "(Train/ and Test/ folders of .bin files) instead of event-digits")
    p.add_argument("--per-class", type=int, default=None, help="with --nmnist: recordings per class and split")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    results = []
    data = {}
    t0 = time.perf_counter()
    for name in args.models.split(","):
        setup = dict(SETUPS[name])
        if args.epochs:
            setup["epochs"] = args.epochs
        key = (setup["data"], setup["T"])
        if key not in data:
            if setup["data"] == "digits":
                data[key] = load_digits()
            elif args.nmnist:
                data[key] = load_nmnist(args.nmnist, time_steps=setup["T"], per_class=args.per_class)
            else:
                data[key] = load_event_digits(time_steps=setup["T"])
        ds = data[key]
        for seed in range(args.seeds):
            dense = run_one(name, setup, ds, seed, "dense")
            dpap = run_one(name, setup, ds, seed, "dpap")
            target = 1 - dpap["hidden_synapses_pct"] / 100
            mag = run_one(name, setup, ds, seed, "magnitude", target)
            for r in (dense, dpap, mag):
                r["epochs_to_dense_best"] = epochs_to(r["curve"], dense["best_epoch_accuracy"])
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
    with open(args.out, "w") as f:
        json.dump({"argv": sys.argv[1:], "seconds": time.perf_counter() - t0, "results": results}, f, indent=1)
    print(table(results))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
