"""``report.json``: what was trained, exported, simulated and whether it fits the chip.

Schema (every run writes at least these keys)::

    {"target", "profile",
     "dataset":  {"name", "n_train", "n_test", "time_steps", "n_features", "n_classes"},
     "model":    {"layers": [{"name", "kind", "n_in", "n_out", "synapses", "synapses_dense"}],
                  "neurons", "neurons_dense", "synapses", "synapses_dense", "sparsity",
                  "compression_ratio", "synapses_counted_from"},
     "accuracy": {"norse" (a network from a file: its own tool, "lava_dl_netx" | "norse_from_nir"),
                  <target>: "lava" | "nir_in_norse", "emulator"},
     "agreement": {"predictions", "compared", "spikes", "emulator_predictions",
                   "reference_spikes" (a netx file: lava-dl's run against the target's),
                   "emulator_skipped" (why, when the emulator does not model the network: sigma-delta layers)},
     "resources": {"cores_used", "cores_available", "fits", "per_layer", "per_core", ...},
                  (a conv layer's per_layer entry adds "tile": {"rows", "cols", "channels"} and
                   "tiles", docs/deployment.md sec. 12)
     "timing_s": {"train", "export", "lava_sim", "total", ...},
     "files": [{"path", "verified_by"}]}

``model.synapses`` is counted in the exported network (Lava ``Sparse`` weights), not
from the torch masks; ``sparsity = 1 - synapses / synapses_dense``.

``timing_s`` (seconds, wall time): ``startup`` and the stages (:data:`TIMING_STAGES`), whose sum is at
most ``total`` (the whole ``dpap-export`` run from the CLI's start to the report), and the parts
measured inside stages (:data:`TIMING_PARTS`, each named with its stage).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from dpap_deploy.ir import NetworkIR
from dpap_deploy.resources import resources_text

REQUIRED = {
    "target": None, "profile": None,
    "dataset": ("name", "n_train", "n_test", "time_steps"),
    "model": ("layers", "neurons", "synapses", "synapses_dense", "sparsity"),
    "accuracy": (),
    "agreement": ("predictions",),
    "resources": ("cores_used", "cores_available", "fits", "per_layer", "per_core"),
    "timing_s": ("train", "export", "lava_sim"),
}
LAYER_KEYS = ("name", "kind", "n_in", "n_out", "synapses", "synapses_dense")
#: ``timing_s`` keys that do not overlap: their sum is at most ``total`` (``dpap_deploy.stages.STAGES`` + startup)
TIMING_STAGES = ("startup", "prepare", "data", "model", "train", "ir", "export", "verify", "map", "measure", "report")
#: ``timing_s`` keys measured inside a stage: part -> stage
TIMING_PARTS = {"train_loop": "train", "export_build": "export", "lava_sim": "export", "norse": "verify",
                "torch": "verify", "reference": "verify", "emulator": "verify", "mapping": "map", "probe": "measure", "energy": "measure",
                "plots": "report"}


def _neurons_dense(layer) -> int:
    """Neurons of the unpruned layer (conv: channels x output pixels)."""
    if layer.kind == "conv":
        return int(layer.dense_shape[0] * layer.out_shape[1] * layer.out_shape[2])
    return int(layer.dense_shape[0])


def model_section(ir: NetworkIR, synapses_per_layer: Dict[str, int], counted_from: str) -> dict:
    """The ``model`` section; synapse counts come from the exported network."""
    layers = []
    for l in ir.layers:
        layers.append({"name": l.name, "kind": l.kind, "n_in": l.n_in, "n_out": l.n_out,
                       "neurons_dense": _neurons_dense(l), "synapses": int(synapses_per_layer[l.name]),
                       "synapses_dense": l.synapses_dense, **_time_mask_entry(l, ir.time_steps)})
    syn = sum(x["synapses"] for x in layers)
    dense = sum(x["synapses_dense"] for x in layers)
    return {
        "name": ir.name, "layers": layers,
        "neurons": ir.neurons, "neurons_dense": sum(_neurons_dense(l) for l in ir.layers),
        "synapses": syn, "synapses_dense": dense,
        "sparsity": round(1.0 - syn / dense, 6) if dense else 0.0,
        "compression_ratio": round(dense / syn, 4) if syn else None,
        "synapses_counted_from": counted_from,
    }


def _time_mask_entry(layer, T: int) -> dict:
    """``{"time_mask": {"gate", "silenced"}}`` for a layer with a timestep mask (docs/dpap.md secs. 7.3-7.4):
    how it silences (``hold``: no spike, no reset, ``v`` kept; ``drop``: the spike is dropped after the
    reset) and the fraction of its (unit, time step) pairs inside the ``T``-step window it silences."""
    if layer.time_mask is None:
        return {}
    m = np.asarray(layer.time_mask, dtype=bool)[:, :T]
    return {"time_mask": {"gate": layer.time_gate, "silenced": round(float((~m).mean()), 6)}}


def validate(report: dict) -> None:
    """Raise ``ValueError`` naming the first missing key of the schema above."""
    for key, sub in REQUIRED.items():
        if key not in report:
            raise ValueError(f"report misses {key!r}")
        for s in sub or ():
            if s not in report[key]:
                raise ValueError(f"report misses {key}.{s}")
    t = report["timing_s"]
    if "total" in t:
        stages = sum(v for k, v in t.items() if k in TIMING_STAGES)
        if stages > t["total"] + 0.01:
            raise ValueError(f"report timing_s.total {t['total']} s is less than the sum of its stages ({stages:.3f} s)")
    from_file = str((report.get("training") or {}).get("family", "")).startswith("file ")  # --from FILE: its own tool
    if not ({"norse", "torch"} & set(report["accuracy"]) or from_file and report["accuracy"]):
        raise ValueError("report misses accuracy.norse (accuracy.torch for an ANN)")
    for i, layer in enumerate(report["model"]["layers"]):
        for k in LAYER_KEYS:
            if k not in layer:
                raise ValueError(f"report misses model.layers[{i}].{k}")
    _validate_tiles(report)


def _validate_tiles(report: dict) -> None:
    """Each conv layer's ``resources.per_layer`` entry has ``tile`` ``{rows, cols, channels}``
    (positive integers) and ``tiles`` (docs/deployment.md sec. 12)."""
    convs = {l["name"] for l in report["model"]["layers"] if l.get("kind") == "conv"}
    for i, entry in enumerate(report["resources"]["per_layer"]):
        if entry.get("layer") not in convs:
            continue
        for k in ("tile", "tiles"):
            if k not in entry:
                raise ValueError(f"report misses resources.per_layer[{i}].{k} (conv layer {entry['layer']!r})")
        for k in ("rows", "cols", "channels"):
            v = entry["tile"].get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"report: resources.per_layer[{i}].tile.{k} = {v!r}; expected a positive integer")


def _pruning_text(tr: dict, cfg: dict) -> str:
    """``pruner dpap-magnitude (target sparsity 0.92, regrowth 0.3)``, ``pruner dpap`` or ``dense``."""
    if not cfg.get("prune"):
        return "dense"
    opts = [f"{what} {tr[k]:g}" for k, what in (("target_sparsity", "target sparsity"), ("regrow", "regrowth"))
            if tr.get(k) is not None]
    return f"pruner {tr.get('pruner') or 'dpap'}" + (f" ({', '.join(opts)})" if opts else "")


def summary_text(report: dict) -> str:
    """A short human summary for the terminal."""
    m, a, r = report["model"], report["accuracy"], report["resources"]
    lines = [
        f"data      {report['dataset']['name']}: {report['dataset']['n_train']} train / "
        f"{report['dataset']['n_test']} test, T = {report['dataset']['time_steps']} steps",
        "model     " + " -> ".join([str(m["layers"][0]["n_in"])] + [str(l["n_out"]) for l in m["layers"]])
        + f"  ({m['neurons']}/{m['neurons_dense']} neurons, {m['synapses']}/{m['synapses_dense']} synapses, "
        f"sparsity {100 * m['sparsity']:.1f} %)",
    ]
    for l in m["layers"]:
        lines.append(f"  {l['name']:<6} {l['n_in']:>5} -> {l['n_out']:<5} synapses {l['synapses']:>7} / {l['synapses_dense']}")
    names = {"norse": "Norse (float)", "torch": "torch (float)", "onnxruntime": "ONNX in onnxruntime", "lava": "Lava fixed point", "nir_in_norse": "NIR file in Norse",
             "netx_in_lava": "netx file in Lava (lava-dl)",
             "emulator": "emulator (fixed point)"}
    lines.append("accuracy  " + "   ".join(f"{names.get(k, k)} {_pct(v)}" for k, v in a.items())
                 + f"   prediction agreement {_pct(report['agreement'].get('predictions'))}")
    lines.append("resources " + resources_text(r))
    b = report.get("budget")
    if b:
        met = f"met after epoch {b['met_after_epoch']}" if b["met"] else "NOT met (more --epochs, or a larger budget)"
        boost = ", ".join(f"{k} +{v:.2f}" for k, v in b["c_boost"].items())
        lines.append(f"budget    {b['profile']}: {met}; knob c raised per layer: {boost or 'none'}")
    e = report.get("energy")
    if e:
        syn = ", ".join(f"{k} {v:,.0f}" for k, v in e["synops_per_sample"].items())
        lines.append(f"energy    rho_w {100 * e['rho_w']:.1f} %, rho_t {100 * e['rho_t']:.1f} %, relative energy "
                     f"{100 * e['relative_energy']:.1f} % (paper eqs. 14-15), T {e['time_steps']} of "
                     f"{e['time_steps_trained']}; synaptic ops per sample: {syn}")
    t = report["timing_s"]
    line = f"time      train {t['train']:.1f} s, export {t['export']:.1f} s, simulation {t['lava_sim']:.1f} s"
    if "emulator" in t:
        line += f", emulator {t['emulator']:.2f} s"
    if "probe" in t:
        line += f", probe {t['probe']:.2f} s"
    if "total" in t:
        line += f"; total {t['total']:.1f} s"
    lines.append(line)
    ag = report["agreement"]
    if ag.get("spikes") is not None:
        lines.append(f"emulator  output spikes equal to Lava's: {_pct(ag['spikes'])}, predictions "
                     f"{_pct(ag.get('emulator_predictions'))}")
    if ag.get("emulator_skipped"):
        lines.append(f"emulator  skipped: {ag['emulator_skipped']}")
    if ag.get("reference_spikes") is not None:
        lines.append(f"reference output spikes equal to Lava's ({ag.get('compared', '')}): {_pct(ag['reference_spikes'])}")
    return "\n".join(lines)


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"


def timing_table(t: Dict[str, float]) -> list:
    """``timing_s`` as markdown table lines: the stages with their share of ``total``, each followed by
    the parts measured inside it; keys this module does not know come last."""
    total = t.get("total") or 0.0

    def row(name, v, indent=""):
        share = f"{100 * v / total:.1f} %" if total else "-"
        return f"| {indent}{name} | {v:.2f} | {share} |"

    out = ["| stage (part) | s | share of total |", "|---|---:|---:|"]
    known = set(TIMING_STAGES) | set(TIMING_PARTS) | {"total"}
    for stage in TIMING_STAGES:
        if stage in t:
            out.append(row(stage, t[stage]))
            out += [row(p, t[p], "&nbsp;&nbsp;") for p, s in TIMING_PARTS.items() if s == stage and p in t]
    out += [row(k, v) for k, v in t.items() if k not in known]
    if "total" in t:
        out.append(f"| **total** | {total:.2f} | 100 % |")
    return out


def markdown_report(report: dict, images: Sequence[str] = ()) -> str:
    """``report.md``: the run for a human, in GitHub-flavoured Markdown (tables, relative image links).

    Args:
        report: a validated ``report.json`` dict.
        images: file names next to the report to show (e.g. ``pruning.png``).
    """
    d, m, a, ag, r = report["dataset"], report["model"], report["accuracy"], report["agreement"], report["resources"]
    names = {"norse": "Norse (float)", "torch": "torch (float)", "lava": "Lava fixed point (Loihi2SimCfg)",
             "emulator": "fixed-point emulator", "netx_in_lava": "netx file in Lava (lava-dl)",
             "nir_in_norse": "NIR file in Norse", "onnxruntime": "ONNX in onnxruntime"}
    out = [f"# dpap-deploy run: {m.get('name', 'network')} -> {report['target']} on {report['profile']}", ""]
    tr = (report.get("training") or {})
    cfg = tr.get("config") or {}
    out.append(f"- **Data** {d['name']}: {d['n_train']} train / {d['n_test']} test samples, "
               f"{d.get('n_features', '?')} features, {d.get('n_classes', '?')} classes, T = {d['time_steps']} time steps, "
               f"seed {d.get('seed', '?')}.")
    if cfg:
        out.append(f"- **Training** {tr.get('epochs')} epochs, {_pruning_text(tr, cfg)}, "
                   f"lr {cfg.get('lr')}, batch {cfg.get('batch_size')}.")
    elif tr.get("from"):
        out.append(f"- **Network** exported from the run in `{tr['from']}` (no training).")
    out += ["", "## Model before and after pruning", "",
            "| layer | kind | inputs | neurons (dense) | neurons | synapses (dense) | synapses | kept |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for l in m["layers"]:
        kept = f"{100 * l['synapses'] / l['synapses_dense']:.1f} %" if l["synapses_dense"] else "-"
        out.append(f"| {l['name']} | {l['kind']} | {l['n_in']} | {l.get('neurons_dense', '')} | {l['n_out']} | "
                   f"{l['synapses_dense']:,} | {l['synapses']:,} | {kept} |")
    ratio = m.get("compression_ratio")
    out.append(f"| **total** | | | {m.get('neurons_dense', '')} | {m['neurons']} | {m['synapses_dense']:,} | "
               f"{m['synapses']:,} | sparsity {100 * m['sparsity']:.1f} %"
               f"{f', {ratio:.2f}x compression' if ratio else ''} |")
    out += ["", f"Synapses counted from {m.get('synapses_counted_from', 'the export')}.", "",
            "## Accuracy on the test split", "", "| where | accuracy |", "|---|---:|"]
    out += [f"| {names.get(k, k)} | {_pct(v)} |" for k, v in a.items()]
    out += ["", f"Predictions agree ({ag.get('compared', '')}): {_pct(ag.get('predictions'))}."]
    if ag.get("spikes") is not None:
        out.append(f"Output spikes equal, Lava vs emulator (every sample, every step): {_pct(ag['spikes'])}.")
    if ag.get("reference_spikes") is not None:
        out.append(f"Output spikes equal, {ag.get('compared', '')} (every sample, every step): "
                   f"{_pct(ag['reference_spikes'])}.")
    out += ["", f"## Resources on {r['profile']}", "",
            f"{'Fits' if r['fits'] else '**Does not fit**'}: {r['cores_used']} cores used (lower bound "
            f"{r['cores_lower_bound']}), {'unlimited' if r['cores_available'] is None else r['cores_available']} available.",
            "", "| layer | cores | neurons | synapses | memory bits | max input axons per core | max output axons per core "
                "| conv tile (rows x cols x channels), tiles |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for l in r["per_layer"]:
        t = l.get("tile")
        tile = f"{t['rows']} x {t['cols']} x {t['channels']}, {l['tiles']}" if t else "-"
        out.append(f"| {l['layer']} | {l['cores']} | {l['neurons']} | {l['synapses']:,} | {l['synaptic_memory_bits']:,} | "
                   f"{l['max_input_axons_per_core']} | {l['max_output_axons_per_core']} | {tile} |")
    for v in r.get("violations", []):
        out.append(f"- violation: {v}")
    for n in r.get("notes", []):
        out.append(f"- note: {n}")
    e = report.get("energy")
    if e:
        out += ["", "## Energy", "",
                f"Weight sparsity rho_w {100 * e['rho_w']:.2f} %, timestep sparsity rho_t {100 * e['rho_t']:.2f} %, "
                f"relative energy (1 - rho_w)(1 - rho_t) = {100 * e['relative_energy']:.2f} % of the dense network "
                f"(Han et al. eqs. 14-15); {e['time_steps']} of {e['time_steps_trained']} time steps deployed.", "",
                "| synaptic operations per sample (spikes x surviving fan-out) | |", "|---|---:|"]
        out += [f"| {k} | {v:,.0f} |" for k, v in e["synops_per_sample"].items()]
        masked = [l for l in report["model"]["layers"] if l.get("time_mask")]
        if masked:
            out += ["", "Timestep masks: " + ", ".join(
                f"{l['name']} {l['time_mask']['gate']} ({100 * l['time_mask']['silenced']:.1f} % of (unit, step) "
                "pairs silenced)" for l in masked) + " (hold: no spike and no reset, v kept; drop: spike dropped "
                "after the reset)."]
    b = report.get("budget")
    if b:
        met = f"met after epoch {b['met_after_epoch']}" if b["met"] else "**not met**"
        out += ["", f"**Budget** {b['profile']} ({b['cores']} cores): {met}. Knob: {b['knob']}."]
    for note in report.get("target_notes", []):
        out += ["", f"> {note}"]
    out += ["", "## Time", ""] + timing_table(report["timing_s"])
    if images:
        out += ["", "## Figures", ""] + [f"![{i}]({i})" for i in images]
    out += ["", "## Files", "", "| file | verified by |", "|---|---|"]
    out += [f"| `{f['path']}` | {f['verified_by'] or '-'} |" for f in report.get("files", [])]
    return "\n".join(out) + "\n"