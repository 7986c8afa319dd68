"""``report.json``: what was trained, exported, simulated and whether it fits the chip.

Schema (every run writes at least these keys)::

    {"target", "profile",
     "dataset":  {"name", "n_train", "n_test", "time_steps", "n_features", "n_classes"},
     "model":    {"layers": [{"name", "kind", "n_in", "n_out", "synapses", "synapses_dense"}],
                  "neurons", "neurons_dense", "synapses", "synapses_dense", "sparsity",
                  "compression_ratio", "synapses_counted_from"},
     "accuracy": {"norse", <target>: "lava" | "nir_in_norse", "emulator"},
     "agreement": {"predictions", "compared", "spikes", "emulator_predictions"},
     "resources": {"cores_used", "cores_available", "fits", "per_layer", "per_core", ...},
     "timing_s": {"train", "export", "lava_sim"},
     "files": [{"path", "verified_by"}]}

``model.synapses`` is counted in the exported network (Lava ``Sparse`` weights), not
from the torch masks; ``sparsity = 1 - synapses / synapses_dense``.
"""
from __future__ import annotations

from typing import Dict, Optional

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
                       "synapses_dense": l.synapses_dense})
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


def validate(report: dict) -> None:
    """Raise ``ValueError`` naming the first missing key of the schema above."""
    for key, sub in REQUIRED.items():
        if key not in report:
            raise ValueError(f"report misses {key!r}")
        for s in sub or ():
            if s not in report[key]:
                raise ValueError(f"report misses {key}.{s}")
    if not {"norse", "torch"} & set(report["accuracy"]):
        raise ValueError("report misses accuracy.norse (accuracy.torch for an ANN)")
    for i, layer in enumerate(report["model"]["layers"]):
        for k in LAYER_KEYS:
            if k not in layer:
                raise ValueError(f"report misses model.layers[{i}].{k}")


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
    t = report["timing_s"]
    line = f"time      train {t['train']:.1f} s, export {t['export']:.1f} s, simulation {t['lava_sim']:.1f} s"
    if "emulator" in t:
        line += f", emulator {t['emulator']:.2f} s"
    lines.append(line)
    ag = report["agreement"]
    if ag.get("spikes") is not None:
        lines.append(f"emulator  output spikes equal to Lava's: {_pct(ag['spikes'])}, predictions "
                     f"{_pct(ag.get('emulator_predictions'))}")
    return "\n".join(lines)


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %"
