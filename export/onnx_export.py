"""Target ``onnx``: an ANN (DPAP's ANN variant) as an ONNX model (``DIR/network.onnx``).

Built from the IR with ``onnx.helper`` (opset 13): per layer ``MatMul`` with the weight
``(n_in, n_out)`` as an initializer, then ``Relu`` on hidden layers; input ``input``
``(batch, F)`` and output ``logits`` ``(batch, C)`` with a dynamic batch axis. The weights
have the compacted shapes, so removed neurons are physically gone from the graph; removed
synapses are zeros (ONNX ``MatMul`` takes dense weights). The file is checked with
``onnx.checker.check_model`` and, given inputs, run with onnxruntime on CPU; the tests compare
its outputs with the torch model's (max abs difference below 1e-5).
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from dpap_deploy.errors import ExportValidationError, IRError, UnsupportedLayerError
from dpap_deploy.export import ExportResult, register_target
from dpap_deploy.fileio import atomic_path
from dpap_deploy.ir import NetworkIR

OPSET = 13


def check_supported(ir: NetworkIR) -> None:
    """ONNX export takes ANN fully connected layers; spiking layers are rejected by name."""
    bad = [f"{l.name} ({l.kind}, {l.activation})" for l in ir.layers
           if l.kind != "fc" or l.activation not in ("relu", "identity")]
    if bad:
        raise UnsupportedLayerError(
            "target onnx exports ANNs (fc layers with relu/identity); unsupported: " + ", ".join(bad)
            + " (spiking networks go to loihi-sim, netx or nir)")


def to_onnx(ir: NetworkIR):
    """The ``onnx.ModelProto`` of an ANN IR."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_supported(ir)
    nodes, inits = [], []
    x = "input"
    for i, l in enumerate(ir.layers):
        w = np.where(l.mask, l.weight, 0.0).astype(np.float32).T.copy()  # (n_in, n_out)
        inits.append(numpy_helper.from_array(w, name=f"{l.name}.weight"))
        y = f"{l.name}.out" if (l.activation == "relu" or i < len(ir.layers) - 1) else "logits"
        nodes.append(helper.make_node("MatMul", [x, f"{l.name}.weight"], [y], name=f"{l.name}"))
        x = y
        if l.activation == "relu":
            out = f"{l.name}.relu" if i < len(ir.layers) - 1 else "logits"
            nodes.append(helper.make_node("Relu", [x], [out], name=f"{l.name}_relu"))
            x = out
    if x != "logits":
        nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    graph = helper.make_graph(
        nodes, ir.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", ir.input_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", ir.layers[-1].n_out])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="dpap-deploy", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    return model


def run_onnx(path: str, x: np.ndarray) -> np.ndarray:
    """Logits ``(N, C)`` of the ONNX file for inputs ``(N, F)``, with onnxruntime on CPU.

    Raises:
        IRError: onnxruntime cannot load the file (truncated or foreign; names the file).
    """
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise IRError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
    return sess.run(["logits"], {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


@register_target("onnx", takes="ann")
def export_onnx(ir: NetworkIR, out_dir: str, spikes: Optional[np.ndarray] = None, **_) -> ExportResult:
    """Write ``out_dir/network.onnx`` (checked with ``onnx.checker``); with inputs ``(N, F)``
    (``spikes`` is the name every target takes), run them with onnxruntime (``counts`` holds the
    logits) and check them against a numpy forward pass of the IR (max abs < 1e-4)."""
    import onnx

    model = to_onnx(ir)
    path = os.path.join(out_dir, "network.onnx")
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, tmp)
    onnx.checker.check_model(path)
    result = ExportResult(target="onnx", network=ir)
    result.extra["synapses_counted_from"] = "ONNX MatMul weights (non-zero)"
    result.extra["accuracy_key"] = "onnxruntime"
    result.synapses_per_layer = {l.name: int(np.count_nonzero(np.where(l.mask, l.weight, 0.0))) for l in ir.layers}
    verified = "onnx.checker.check_model"
    if spikes is not None:
        x = np.asarray(spikes, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != ir.input_size:
            raise ExportValidationError(f"inputs have shape {x.shape}; network {ir.name!r} takes (N, {ir.input_size})")
        t0 = time.perf_counter()
        result.counts = run_onnx(path, x)
        result.seconds["run"] = time.perf_counter() - t0
        ref = x.astype(np.float64)
        for l in ir.layers:
            ref = ref @ np.where(l.mask, l.weight, 0.0).T.astype(np.float64)
            if l.activation == "relu":
                ref = np.maximum(ref, 0.0)
        err = float(np.abs(result.counts - ref).max()) if ref.size else 0.0
        result.extra["max_abs_error_vs_ir"] = err
        if err > 1e-4:
            raise ExportValidationError(f"{path}: onnxruntime logits differ from the network's by {err:.2e}")
        verified += f"; onnxruntime run (max abs error vs the IR {err:.1e})"
    result.files.append({"path": path, "verified_by": verified})
    return result
