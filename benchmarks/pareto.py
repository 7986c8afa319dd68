"""Deployment-aware comparison of pruners (issue 15): accuracy against what a chip pays for.

For each network (``snn-mlp`` on digits, ``snn-2c2f`` on event-digits), pruner variant and seed,
one whole pipeline run (``dpap_deploy.deploy``: training, export to Lava's fixed-point
simulator, the emulator's check, mapping onto ``loihi2``, the energy section) gives one row:

* accuracy: Norse on the whole test split, and Lava's on the simulated samples;
* **cores used** on ``loihi2`` (and the lower bound), **synapses**, neurons;
* **synaptic operations per sample**, measured from Norse's spikes on the whole test split
  (every spike times the surviving synapses it reaches, ``dpap_deploy/energy.py``);
* epochs to the dense run's best accuracy (same seed), from ``train_log.jsonl``.

Variants (``--variants``): ``dense``; ``default`` (``dpap-export``'s defaults: the family's
default pruning, ``train/families.py``); ``dpap`` (preset ``mnist-snn`` as this project first ran it:
``--dpap-schedule fixed``, ``unit()`` over the survivors); ``dpap-all`` (``unit()`` over all elements, the authors'
normalisation); ``dpap-rl`` (``--dpap-schedule run-length``); ``dpap-all-rl`` (both); ``dpap-w``
and ``dpap-w-all-rl`` (synapses ranked by ``unit(M) * |w|``, ``--dpap-synapse-score bcm-weight``);
``magnitude@S`` (gradual global magnitude pruning to sparsity ``S``, e.g. ``magnitude@0.8``, with the
same recovery tail); ``dpapmag@S`` (``--pruner dpap-magnitude``: DPAP's neuron rule of ``mnist-snn`` with
the authors' normalisation and the run-length schedule, synapses by global magnitude to ``S`` of the
dense count; ``dpapmag@S-pHI`` over ``[P0, P_HI]``); ``dpapsyn@S[-pHI]`` the same with
``--pruner dpap-synops`` (synapses ranked by ``|w| / c_l ** 0.25``, ``c_l`` their layer's operations
per synapse; ``-cP`` appended: ``--synops-cost-power P``, ``|w| / c_l ** P``); any variant with
``+spLAMBDA`` appended trains with ``--synops-penalty LAMBDA``, with ``+tsEPSILON_ETA`` appended with
``--timestep-pruning EPSILON,ETA``, with ``+ttRHO_T`` with ``--timestep-target RHO_T``, with ``+rgFRACTION``
with ``--regrow FRACTION`` (outermost: ``dpapmag@0.9+tt0.5+rg0.3``). A run-length variant with ``-pHI`` appended (``dpap-all-rl-p97``) scales
``unit()`` over ``[P0, P_HI]`` (``--dpap-percentiles 0,HI``) instead of the preset's ``[P0, P75]``.

One JSON line per run is appended to ``benchmarks/pareto_results.jsonl``; ``--table`` prints the
mean ± standard deviation per (network, variant) and ``--plot FILE.png`` draws accuracy against
cores, synapses and synops per sample.

Usage::

    .venv/bin/python benchmarks/pareto.py --networks snn-mlp --seeds 0,1,2 \\
        --variants dense,dpap,dpap-all-rl,magnitude@0.5,magnitude@0.8,magnitude@0.9
    .venv/bin/python benchmarks/pareto.py --table --plot benchmarks/pareto.png
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "pareto_results.jsonl")
#: per network: deploy() options (the README's runs: the demo MLP and the paper's 2C2F)
NETWORKS = {
    "snn-mlp": {"model": "snn-mlp", "data": "digits", "epochs": 40},
    "snn-2c2f": {"model": "snn-2c2f", "data": "event-digits", "epochs": 30, "lr": 0.01, "time_steps": 20,
                 "max_test": 60},
}


def variant_options(variant: str) -> dict:
    """``deploy()`` options of a pruner variant (module docstring). Every DPAP variant names its
    preset (``mnist-snn``, the authors' MNIST SNN constants), normalisation, schedule and
    percentiles explicitly, so a row means the same whatever the defaults are."""
    if "+rg" in variant:  # VARIANT+rgFRACTION: the same with regrowth (--regrow FRACTION)
        base_name, alpha = variant.rsplit("+rg", 1)
        return {**variant_options(base_name), "regrow": float(alpha)}
    if "+tt" in variant:  # VARIANT+ttRHO_T: the same with timestep pruning to a target (--timestep-target RHO_T)
        base_name, rho_t = variant.rsplit("+tt", 1)
        return {**variant_options(base_name), "timestep_target": float(rho_t)}
    if "+ts" in variant:  # VARIANT+tsEPSILON_ETA: the same with timestep pruning (--timestep-pruning EPSILON,ETA)
        base_name, rule = variant.rsplit("+ts", 1)
        return {**variant_options(base_name), "timestep_pruning": rule.replace("_", ",")}
    if "+sp" in variant:  # VARIANT+spLAMBDA: the same with the synaptic-operation penalty LAMBDA
        base_name, lam = variant.rsplit("+sp", 1)
        return {**variant_options(base_name), "synops_penalty": float(lam)}
    if variant.startswith("magnitude@"):  # from epoch 5 (mnist-snn's e0, fixed) to the tail
        return {"pruner": "magnitude", "target_sparsity": float(variant.split("@", 1)[1]), "dpap_schedule": "fixed"}
    if "-c" in variant and variant.startswith("dpapsyn@"):  # dpapsyn@S[-pHI]-cP: |w| / c_l ** P
        base_name, power = variant.rsplit("-c", 1)
        return {**variant_options(base_name), "synops_cost_power": float(power)}
    if variant.startswith(("dpapmag@", "dpapsyn@")):  # DPAP's neuron rule + global synapse ranking to S of dense
        spec, _, hi = variant.split("@", 1)[1].partition("-p")  # dpapmag@S-pHI: unit() over [P0, P_HI]
        pruner = "dpap-magnitude" if variant.startswith("dpapmag@") else "dpap-synops"
        return {"pruner": pruner, "target_sparsity": float(spec), "regrow": 0.0,
                "dpap_preset": "mnist-snn", "dpap_percentiles": f"0,{hi or 75}", "dpap_normalise": "all",
                "dpap_schedule": "run-length"}
    if variant == "default":  # whatever dpap-export does with no pruning option (the family's default pruning)
        return {}
    base = {"pruner": "dpap", "dpap_preset": "mnist-snn", "dpap_percentiles": "0,75", "dpap_synapse_score": "bcm"}
    known = {"dense": {"pruner": "dense"},
             "dpap": {**base, "dpap_normalise": "alive", "dpap_schedule": "fixed"},
             "dpap-all": {**base, "dpap_normalise": "all", "dpap_schedule": "fixed"},
             "dpap-rl": {**base, "dpap_normalise": "alive", "dpap_schedule": "run-length"},
             "dpap-all-rl": {**base, "dpap_normalise": "all", "dpap_schedule": "run-length"},
             "dpap-w": {**base, "dpap_synapse_score": "bcm-weight", "dpap_normalise": "alive", "dpap_schedule": "fixed"},
             "dpap-w-all-rl": {**base, "dpap_synapse_score": "bcm-weight", "dpap_normalise": "all",
                               "dpap_schedule": "run-length"},
             "dpap-wt-all-rl": {**base, "dpap_synapse_score": "weight", "dpap_normalise": "all",
                                "dpap_schedule": "run-length"}}
    for name in list(known):  # NAME-pHI: unit() scaled over [P0, P_HI] instead of [P0, P75]
        if name.startswith("dpap-") and name.endswith("-rl"):
            for hi in (90, 95, 97):
                known[f"{name}-p{hi}"] = {**known[name], "dpap_percentiles": f"0,{hi}"}
    if variant not in known:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(known)}, default, magnitude@S")
    return known[variant]


def _curve(out: str) -> list:
    """Test accuracy per epoch from the run's ``train_log.jsonl`` (None where not evaluated)."""
    with open(os.path.join(out, "train_log.jsonl")) as f:
        return [json.loads(line).get("test_accuracy") for line in f if line.strip()]


def run_one(network: str, variant: str, seed: int, args) -> dict:
    import dpap_deploy
    from dpap_deploy.pipeline import RunConfig

    opts = {**NETWORKS[network], **variant_options(variant)}
    if args.epochs:
        opts["epochs"] = args.epochs
    if args.lr:
        opts["lr"] = args.lr
    out = os.path.join(args.out, f"{network}-{variant}-{seed}")
    t0 = time.perf_counter()
    rep = dpap_deploy.deploy(target="loihi-sim", profile="loihi2", out=out, force=True, seed=seed, **opts)
    acc, res, model, energy = rep["accuracy"], rep["resources"], rep["model"], rep.get("energy") or {}
    return {"network": network, "variant": variant, "seed": seed, "epochs": opts["epochs"], "lr": opts.get("lr", RunConfig.lr),
            "norse": acc.get("norse"), "lava": acc.get("lava"), "spikes_equal": rep["agreement"].get("spikes"),
            "cores": res["cores_used"], "cores_lower_bound": res["cores_lower_bound"],
            "synapses": model["synapses"], "neurons": model["neurons"], "sparsity": model["sparsity"],
            "synops_per_sample": energy.get("synops_per_sample", {}).get("norse"),
            "rho_t": energy.get("rho_t"), "relative_energy": energy.get("relative_energy"),
            **hidden_removed(model["layers"]), "curve": _curve(out), "seconds": round(time.perf_counter() - t0, 1)}


def hidden_removed(layers: list) -> dict:
    """The issue's measure: fractions of the hidden layers' (every weight layer but the output)
    synapses and neurons removed, against the dense counts, from ``report.json``'s ``model.layers``."""
    hidden = layers[:-1]
    return {"hidden_synapses_removed": 1 - sum(l["synapses"] for l in hidden) / sum(l["synapses_dense"] for l in hidden),
            "hidden_neurons_removed": 1 - sum(l["n_out"] for l in hidden) / sum(l["neurons_dense"] for l in hidden)}


def epochs_to_dense_best(row: dict, rows: list) -> object:
    """First epoch (1-based) at which ``row`` reaches the best accuracy of the dense run with the
    same network and seed (the paper's speed-up measure), or None (not reached, no dense run)."""
    dense = [r for r in rows if r["network"] == row["network"] and r["seed"] == row["seed"] and r["variant"] == "dense"]
    if not dense:
        return None
    best = max(a for a in dense[0]["curve"] if a is not None)
    return next((e + 1 for e, a in enumerate(row["curve"]) if a is not None and a >= best), None)


def _ms(values, scale=1.0, fmt="{:.2f}") -> str:
    v = [scale * x for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(statistics.mean(v))} ± {fmt.format(statistics.stdev(v))}"


def _norse(row: dict) -> float:
    """Norse's accuracy on the whole test split: the last epoch's evaluation (the report's
    ``accuracy.norse`` covers only the ``max_test`` samples a run simulates)."""
    return row["curve"][-1] if row.get("curve") and row["curve"][-1] is not None else row["norse"]


def table(rows: list) -> str:
    """Mean ± standard deviation over seeds per (network, variant), best accuracy first."""
    out = ["| network | variant | Norse accuracy % (test split) | Lava accuracy % (simulated samples) | cores used (lower bound) | synapses | "
           "neurons | hidden synapses / neurons removed % | synops per sample | epochs to dense best | seeds |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["network"], r["variant"]) for r in rows})
    for net, var in keys:
        rs = [r for r in rows if r["network"] == net and r["variant"] == var]
        e2b = [epochs_to_dense_best(r, rows) for r in rs]
        out.append(f"| {net} | {var} | {_ms([_norse(r) for r in rs], 100)} | {_ms([r['lava'] for r in rs], 100)} | "
                   f"{_ms([r['cores'] for r in rs], fmt='{:.1f}')} ({_ms([r['cores_lower_bound'] for r in rs], fmt='{:.1f}')}) | "
                   f"{_ms([r['synapses'] for r in rs], fmt='{:,.0f}')} | {_ms([r['neurons'] for r in rs], fmt='{:,.0f}')} | "
                   f"{_removed(rs)} | "
                   f"{_ms([r['synops_per_sample'] for r in rs], fmt='{:,.0f}')} | "
                   f"{_ms(e2b, fmt='{:.1f}')} ({sum(e is None for e in e2b)} not reached) | {len(rs)} |")
    return "\n".join(out)


def _removed(rs: list) -> str:
    """``hidden synapses / neurons removed`` (means over seeds), or - for rows from before the field."""
    if any("hidden_synapses_removed" not in r for r in rs):
        return "-"
    return (f"{100 * statistics.mean(r['hidden_synapses_removed'] for r in rs):.1f} / "
            f"{100 * statistics.mean(r['hidden_neurons_removed'] for r in rs):.1f}")


def plot(rows: list, path: str) -> None:
    """Accuracy against cores used, synapses and synops per sample; one panel row per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = sorted({r["network"] for r in rows})
    fig, axes = plt.subplots(len(nets), 3, figsize=(13, 3.6 * len(nets)), squeeze=False)
    for i, net in enumerate(nets):
        for j, (key, label) in enumerate((("cores", "cores used on loihi2"), ("synapses", "synapses"),
                                          ("synops_per_sample", "synaptic operations per sample"))):
            ax = axes[i][j]
            for k, var in enumerate(sorted({r["variant"] for r in rows if r["network"] == net})):
                rs = [r for r in rows if r["network"] == net and r["variant"] == var and r.get(key) is not None]
                # past ten variants the colours repeat: a marker per group of ten tells them apart
                ax.scatter([r[key] for r in rs], [100 * _norse(r) for r in rs], label=var, s=22,
                           color=f"C{k % 10}", marker="osD^v"[(k // 10) % 5])
            ax.set_xlabel(label)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            ax.set_ylabel(f"{net}: Norse accuracy %")
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--networks", default="snn-mlp")
    p.add_argument("--variants", default="dense,dpap,dpap-all-rl,magnitude@0.5,magnitude@0.8,magnitude@0.9")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="override the network's epochs")
    p.add_argument("--lr", type=float, default=None, help="override the network's learning rate")
    p.add_argument("--out", default="runs/bench-pareto")
    p.add_argument("--table", action="store_true", help="only print the table of the results file")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--results", default=RESULTS, help="the JSONL file rows are appended to and read from")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 when two "
                   "sweeps share a 2-core machine, or they slow each other down many times over)")
    args = p.parse_args(argv)
    if args.threads:  # the pipeline keeps torch's threads when OMP_NUM_THREADS is set
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    if not args.table:
        for net in args.networks.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for variant in args.variants.split(","):
                    row = run_one(net, variant, seed, args)
                    print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
                    with open(args.results, "a") as f:
                        f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in open(args.results)] if os.path.isfile(args.results) else []
    print(table(rows))
    if args.plot and rows:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
