"""Sweep DPAP constants and learning rates on the SNN MLP (64-128-64-10, digits, T = 16).

Each line of the spec file is one run: JSON with optional keys ``hidden``, ``epochs``, ``T``,
``lr``, ``seed``, ``method`` (dpap/dense/magnitude), ``target`` (magnitude's sparsity),
``fcn``/``fcs`` (FC neuron/synapse constants ``[c, b, rho]``), ``run_length`` (true: the schedule
compressed to ``epochs`` with a recovery tail, ``for_run_length`` from the 150-epoch MNIST script)
and any ``DPAPConfig`` field.
Two runs at a time, one thread each; one JSON result per line on stdout.

    .venv/bin/python benchmarks/dpap_sweep.py benchmarks/dpap_sweep.jsonl > results.jsonl
"""
import json
import sys
import multiprocessing as mp

def run(spec):
    import torch
    torch.set_num_threads(1)
    from dpap_deploy.data import load_digits
    from dpap_deploy.train.dpap import DPAPConfig, RuleConstants, PRESETS, for_run_length
    from dpap_deploy.train.loop import TrainConfig, train
    from dpap_deploy.train.models import SpikingMLP
    ds = load_digits()
    s = dict(spec)
    hidden = s.pop("hidden", [128, 64]); ep = s.pop("epochs", 30); T = s.pop("T", 16); lr = s.pop("lr", 2e-3)
    seed = s.pop("seed", 0); method = s.pop("method", "dpap"); target = s.pop("target", 0.0)
    fcn = s.pop("fcn", None); fcs = s.pop("fcs", None); s.pop("tag", None)
    kw = {}
    if fcn: kw["fc_neuron"] = RuleConstants(*fcn)
    if fcs: kw["fc_synapse"] = RuleConstants(*fcs)
    if "percentiles" in s: s["percentiles"] = tuple(s["percentiles"])
    run_length = s.pop("run_length", False)
    cfg = DPAPConfig(**kw, **s)
    if run_length:
        cfg = for_run_length(cfg, ep, 150)
    torch.manual_seed(seed)
    model = SpikingMLP([64, *hidden, 10])
    dense = [int(m.numel()) for m in model.masks]
    res = train(ds, TrainConfig(epochs=ep, time_steps=T, lr=lr, seed=seed), cfg, progress=False, model=model, method=method, target_sparsity=target)
    h = res.history[-1]
    syn = sum(v["synapses"] for k, v in list(h["layers"].items())[:-1]); neu = sum(v["neurons"] for k, v in list(h["layers"].items())[:-1])
    return dict(spec=spec, acc=h["test_accuracy"], best=max(x["test_accuracy"] for x in res.history),
                syn_removed=1 - syn / sum(dense[:-1]), neu_removed=1 - neu / sum(hidden), layers=h["layers"], s=res.seconds,
                curve=[round(x["test_accuracy"], 3) for x in res.history], syncurve=[x["synapses"] for x in res.history])

if __name__ == "__main__":
    specs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    with mp.get_context("spawn").Pool(2) as p:
        for r in p.imap(run, specs):
            print(json.dumps(r), flush=True)
