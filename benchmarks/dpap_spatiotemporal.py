"""Spatio-temporal DPAP on event data, measured the way the paper's Table II does.

The paper's 2C2F SNN for event data (15C3-AP2-40C3-AP2-300FC-10FC), on event-digits frames
(20x20, 2 polarities, T = 20 by default), per seed: dense; DPAP spatial (synapses/channels/
neurons); DPAP spatio-temporal at two settings of the timestep rule's ``epsilon,eta``; and
gradual global magnitude pruning at DPAP spatial's weight sparsity. Columns: weight
sparsity ``rho_w`` (hidden layers, the paper counts weights), timestep sparsity ``rho_t``,
relative energy ``(1 - rho_w)(1 - rho_t)`` (paper eqs. 14-15), synaptic operations per test
sample (spikes x surviving fan-out, Norse, on the deployed connectivity), the spikes the
timestep masks actually remove (hidden spikes of the trained network with its masks against
the same network with every mask opened: ``rho_t`` counts (unit, step) pairs, most of which
would not have spiked anyway), accuracy and its change against dense, epochs to the dense run's best accuracy, wall time.

    .venv/bin/python benchmarks/dpap_spatiotemporal.py --jobs 2         # 3 seeds, 30 epochs: about 1 h on 2 cores
    .venv/bin/python benchmarks/dpap_spatiotemporal.py --seeds 1 --epochs 2 --per-class 20   # smoke run

``--timestep-target NAME=PRUNER[@S],RHO_T`` adds a setting that prunes time steps to a target
(docs/dpap.md sec. 7.5) with any DPAP pruner, e.g. ``dpapmag-tt70=dpap-magnitude@0.8,0.7``
(with ``--schedule run-length``).

Results go to ``benchmarks/dpap_spatiotemporal_results.jsonl`` (one JSON line per run, appended,
so an interrupted sweep keeps what it finished) and the table to stdout.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace

import lava.magma.core.process.process  # noqa: F401  (Lava first: it fixes multiprocessing's start method)
import numpy as np
import torch

from dpap_deploy.energy import energy_section
from dpap_deploy.data.event_digits import load_event_digits
from dpap_deploy.train.compact import to_ir
from dpap_deploy.train.dpap import PRESET_EPOCHS, PRESETS, RuleConstants, for_run_length
from dpap_deploy.train.loop import TrainConfig, classify, encoder_for, population_spikes, test_inputs, train
from dpap_deploy.train.models import SpikingCNN

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {  # name -> (pruner, timestep rule (epsilon, eta) or None[, target sparsity S, timestep target RHO_T])
    "dense": ("dense", None),
    "dpap-spatial": ("dpap", None),
    "dpap-st-a": ("dpap", (1.0, 13.0)),
    "dpap-st-b": ("dpap", (1.5, 10.0)),
}


def setting(name: str):
    """``(pruner, rule, target_sparsity, timestep_target)`` of a setting (``magnitude``: the pruner
    alone, its sparsity set from DPAP spatial's run)."""
    method, rule, *rest = SETTINGS.get(name, ("magnitude", None))
    target, tt = (rest + [0.0, None])[:2]
    return method, rule, target, tt


def is_temporal(name: str) -> bool:
    _, rule, _, tt = setting(name)
    return rule is not None or tt is not None


def hidden_weights(model) -> int:
    """Surviving weights of every layer but the output (conv kernels counted per weight)."""
    keep = sum(int(model.masks[l].sum()) for l in range(len(model.layers) - 1))
    return keep


_DS = None  # the dataset, set in the parent before the worker processes fork
#: the DPAP constants of every DPAP setting (``--preset``, ``--schedule``, ``--normalise``, ``--percentiles``)
DPAP = {"preset": "cifar-snn", "schedule": "fixed", "normalise": None, "percentiles": None}


def dpap_config(epochs: int, rule=None, timestep_target=None):
    """The DPAP configuration of the run from :data:`DPAP` and the timestep rule ``(epsilon, eta)``
    or the timestep target ``RHO_T`` (as ``dpap-export``'s options build it: the run-length schedule
    scales the timestep rule too; a target needs it)."""
    cfg = PRESETS[DPAP["preset"]]
    if rule is not None:
        cfg = replace(cfg, timestep=RuleConstants(rule[0], 2.0, rule[1]))
    if DPAP["normalise"]:
        cfg = replace(cfg, normalise=DPAP["normalise"])
    if DPAP["percentiles"]:
        cfg = replace(cfg, percentiles=tuple(DPAP["percentiles"]))
    if DPAP["schedule"] == "run-length":
        cfg = for_run_length(cfg, epochs, PRESET_EPOCHS[DPAP["preset"]])
    if timestep_target is not None:
        cfg = replace(cfg, timestep_target=timestep_target)
    return cfg


def spikes_actually_removed(model, x_test) -> float:
    """Fraction of hidden-population spikes the timestep masks remove: ``1 - S_masked / S_open``,
    where ``S_open`` is the same trained network run with every mask opened (all steps allowed);
    0.0 for a network without masks."""
    import copy

    masks = [model.time_mask(l) for l in range(len(model.layers))]
    if all(m is None for m in masks):
        return 0.0
    opened = copy.deepcopy(model)
    for l, m in enumerate(masks):
        if m is not None:
            opened.set_time_mask(l, torch.ones_like(m))
    hidden = slice(0, len(model.layers) - 1)
    masked = sum(float(p.sum()) for p in population_spikes(model, x_test)[hidden])
    free = sum(float(p.sum()) for p in population_spikes(opened, x_test)[hidden])
    return 1.0 - masked / free if free else 0.0


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_job(seed: int, name: str, epochs: int, T: int, lr: float, target: float = 0.0) -> dict:
    def log(rec):
        print(f"  [{name} seed {seed}] epoch {rec['epoch'] + 1}/{epochs}: loss {rec['loss']:.3f}, "
              f"test {100 * rec['test_accuracy']:.2f} %, synapses {rec['synapses']}", flush=True)
    return run(_DS, seed, name, epochs, T, lr, target, on_epoch=log)


def run(ds, seed: int, name: str, epochs: int, T: int, lr: float, target: float = 0.0, on_epoch=None) -> dict:
    """Train one setting from scratch and measure it (one row of the results file)."""
    method, rule, s_target, tt = setting(name)
    target = target or s_target
    torch.manual_seed(seed)
    model = SpikingCNN(ds.x_train.shape[2:], (15, 40), (300,), ds.n_classes)
    dense_w = hidden_weights(model)
    dpap_cfg = dpap_config(epochs, rule, tt)
    cfg = TrainConfig(epochs=epochs, time_steps=T, seed=seed, lr=lr)
    res = train(ds, cfg, dpap_cfg, progress=False, model=model, method=method,
                target_sparsity=target, on_epoch=on_epoch)
    m = res.model
    x_test = test_inputs(ds, encoder_for(ds, m, cfg), seed)
    ir = to_ir(m, T)
    rho_w = 1.0 - hidden_weights(m) / dense_w
    pops = population_spikes(m, x_test)
    e = energy_section(ir, rho_w, norse=[x_test[: ir.time_steps]] + pops[:-1])
    pred = classify(pops[-1].sum(0))
    return {"setting": name, "pruner": method, "target_sparsity": target, "timestep_rule": rule,
            "timestep_target": tt, "dpap": dict(DPAP), "seed": seed, "epochs": epochs, "T": T, "T_deployed": ir.time_steps,
            "accuracy": float((pred == ds.y_test).mean()), "rho_w": rho_w, "rho_t": e["rho_t"],
            "relative_energy": e["relative_energy"], "synops_per_sample": e["synops_per_sample"]["norse"],
            "spikes_removed": spikes_actually_removed(m, x_test),
            "train_s": res.seconds, "curve": [h["test_accuracy"] for h in res.history],
            "exportable_to_loihi": not ir.silenced_inside_window()}


def epochs_to(curve, level):
    return next((i + 1 for i, a in enumerate(curve) if a >= level - 1e-12), None)


def fmt(vals, digits=2):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{vals[0]:.{digits}f}" if len(vals) == 1 else f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def table(rows) -> str:
    out = ["| setting | weight sparsity % | timestep sparsity % | spikes actually removed % | relative energy % | synops / sample | synops % of dense | accuracy % | "
           "change vs dense | epochs to dense best (runs) | T deployed | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    dense = {r["seed"]: r for r in rows if r["setting"] == "dense"}
    names = sorted({r["setting"] for r in rows}, key=lambda n: (n == "magnitude", n != "dense", n))
    for name in names:
        rs = [r for r in rows if r["setting"] == name]
        if not rs:
            continue
        delta = [100 * (r["accuracy"] - dense[r["seed"]]["accuracy"]) for r in rs if r["seed"] in dense]
        syn = [100 * r["synops_per_sample"] / dense[r["seed"]]["synops_per_sample"] for r in rs if r["seed"] in dense]
        hit = [epochs_to(r["curve"], max(dense[r["seed"]]["curve"])) for r in rs if r["seed"] in dense]
        out.append(f"| {name} | {fmt([100 * r['rho_w'] for r in rs], 1)} | {fmt([100 * r['rho_t'] for r in rs], 1)} | "
                   f"{fmt([100 * r['spikes_removed'] for r in rs if 'spikes_removed' in r], 1)} | "
                   f"{fmt([100 * r['relative_energy'] for r in rs], 1)} | {fmt([r['synops_per_sample'] for r in rs], 0)} | {fmt(syn, 1)} | "
                   f"{fmt([100 * r['accuracy'] for r in rs])} | {fmt(delta)} | "
                   f"{fmt(hit, 1)} ({sum(h is not None for h in hit)}/{len(rs)}) | {fmt([r['T_deployed'] for r in rs], 1)} | "
                   f"{fmt([r['train_s'] for r in rs], 0)} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed + seeds - 1")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--time-steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--per-class", type=int, default=None, help="event-digits recordings per class (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, in forked processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    p.add_argument("--settings", default=",".join([*SETTINGS, "magnitude"]),
                   help="comma-separated subset of: " + ", ".join([*SETTINGS, "magnitude"]))
    p.add_argument("--timestep-rule", action="append", default=[], metavar="NAME=EPSILON,ETA",
                   help="add a spatio-temporal DPAP setting (repeatable), e.g. dpap-st-c=2.0,10")
    p.add_argument("--timestep-target", action="append", default=[], metavar="NAME=PRUNER[@S],RHO_T",
                   help="add a setting with timestep pruning to a target (docs/dpap.md sec. 7.5; repeatable; needs "
                        "--schedule run-length), e.g. dpapmag-tt60=dpap-magnitude@0.8,0.6")
    p.add_argument("--preset", default="cifar-snn", choices=sorted(PRESETS), help="DPAP constants (default cifar-snn)")
    p.add_argument("--schedule", default="fixed", choices=("fixed", "run-length"), help="as --dpap-schedule")
    p.add_argument("--normalise", default=None, choices=("alive", "all"), help="as --dpap-normalise")
    p.add_argument("--percentiles", default=None, metavar="LO,HI", help="as --dpap-percentiles")
    p.add_argument("--table", metavar="JSONL", default=None, help="only print the table of a results file")
    p.add_argument("--out", default=os.path.join(HERE, "dpap_spatiotemporal_results.jsonl"))
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(table([json.loads(line) for line in f if line.strip()]))
        return
    for spec in args.timestep_rule:
        try:
            name, rule = spec.split("=")
            eps, eta = (float(v) for v in rule.split(","))
        except ValueError:
            p.error(f"--timestep-rule {spec!r}: expected NAME=EPSILON,ETA")
        SETTINGS[name] = ("dpap", (eps, eta))
    for spec in args.timestep_target:
        try:
            name, rest = spec.split("=")
            pruner, rho_t = rest.split(",")
            pruner, _, s_target = pruner.partition("@")
            SETTINGS[name] = (pruner, None, float(s_target or 0.0), float(rho_t))
        except ValueError:
            p.error(f"--timestep-target {spec!r}: expected NAME=PRUNER[@S],RHO_T")
    if args.timestep_target and args.schedule != "run-length":
        p.error("--timestep-target needs --schedule run-length (its schedule ends where the recovery tail starts)")
    DPAP.update(preset=args.preset, schedule=args.schedule, normalise=args.normalise,
                percentiles=[float(v) for v in args.percentiles.split(",")] if args.percentiles else None)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    names += [spec.split("=")[0] for spec in args.timestep_rule + args.timestep_target
              if spec.split("=")[0] not in names]
    bad = [n for n in names if n not in SETTINGS and n != "magnitude"]
    if bad:
        p.error(f"--settings: unknown {', '.join(bad)}")
    if "magnitude" in names and "dpap-spatial" not in names:
        p.error("--settings: magnitude needs dpap-spatial (it prunes to DPAP spatial's weight sparsity)")
    ds = load_event_digits(time_steps=args.time_steps)
    if args.per_class:
        keep_tr = np.concatenate([np.flatnonzero(ds.y_train == c)[: args.per_class] for c in range(ds.n_classes)])
        keep_te = np.concatenate([np.flatnonzero(ds.y_test == c)[: args.per_class] for c in range(ds.n_classes)])
        ds = replace(ds, x_train=ds.x_train[keep_tr], y_train=ds.y_train[keep_tr],
                     x_test=ds.x_test[keep_te], y_test=ds.y_test[keep_te])
    global _DS
    _DS = ds
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    # spatio-temporal runs first: they are the ones the table is about
    order = [n for n in names if n in SETTINGS and is_temporal(n)] + \
        [n for n in ("dpap-spatial", "dense") if n in names]
    rows = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(_run_job, seed, n, args.epochs, args.time_steps, args.lr)
                   for seed in range(args.first_seed, args.first_seed + args.seeds) for n in order}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                row = fut.result()
                rows.append(row)
                _emit(row, args.out)
                if row["setting"] == "dpap-spatial" and "magnitude" in names:
                    pending.add(pool.submit(_run_job, row["seed"], "magnitude", args.epochs, args.time_steps,
                                            args.lr, row["rho_w"]))
    print(table(rows))
    print(f"total {time.perf_counter() - t0:.0f} s with {args.jobs} job(s) x {threads} thread(s)")


def _emit(row: dict, path: str) -> None:
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
