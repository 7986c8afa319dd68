"""Target ``onnx``: an ANN (DPAP's ANN variant) as an ONNX model (``DIR/network.onnx``).

Built from the IR with ``onnx.helper`` (opset 13): per fully connected layer ``MatMul`` with
the weight ``(n_in, n_out)`` as an initializer, per conv layer ``Conv`` (average pooling is
already folded into the weights by the IR, so pooled maps need no node), ``Flatten`` before
the first fully connected layer, ``Relu`` on hidden layers; input ``input`` ``(batch, F)`` or
``(batch, C, H, W)`` and output ``logits`` ``(batch, C)`` with a dynamic batch axis. The weights
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

from dpap_deploy.errors import ExportValidationError, IRError
from dpap_deploy.export import ExportResult, check_layers, register_target
from dpap_deploy.fileio import atomic_path
from dpap_deploy.ir import NetworkIR

OPSET = 13


def check_supported(ir: NetworkIR) -> None:
    """ONNX export takes ANN fully connected layers; spiking layers are rejected by name."""
    check_layers(ir, "onnx", ("fc", "conv", "flatten", "avgpool"), ("relu", "identity"),
                 what="exports ANNs (fc/conv layers with relu/identity, flatten, average pooling)",
                 hint=" (spiking networks go to loihi-sim, netx or nir)")


def to_onnx(ir: NetworkIR):
    """The ``onnx.ModelProto`` of an ANN IR."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_supported(ir)
    nodes, inits = [], []
    x = "input"
    for l in ir.nodes:
        if l.kind in ("flatten", "avgpool"):
            out = f"{l.name}.out"
            nodes.append(helper.make_node("Flatten", [x], [out], name=l.name, axis=1) if l.kind == "flatten" else
                         helper.make_node("AveragePool", [x], [out], name=l.name, kernel_shape=[l.pool, l.pool],
                                          strides=[l.pool, l.pool]))
            x = out
            continue
        if l.kind == "conv":
            inits.append(numpy_helper.from_array(l.masked_weight().astype(np.float32), name=f"{l.name}.weight"))
            p = int(l.padding)
            nodes.append(helper.make_node("Conv", [x, f"{l.name}.weight"], [f"{l.name}.out"], name=l.name,
                                          strides=[l.stride, l.stride], pads=[p, p, p, p], kernel_shape=list(l.kernel)))
        else:
            w = l.masked_weight().astype(np.float32).T.copy()  # (n_in, n_out)
            inits.append(numpy_helper.from_array(w, name=f"{l.name}.weight"))
            nodes.append(helper.make_node("MatMul", [x, f"{l.name}.weight"], [f"{l.name}.out"], name=l.name))
        x = f"{l.name}.out"
        if l.activation == "relu":
            nodes.append(helper.make_node("Relu", [x], [f"{l.name}.relu"], name=f"{l.name}_relu"))
            x = f"{l.name}.relu"
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    in_dims = ["batch", *(ir.input_shape or [ir.input_size])]
    graph = helper.make_graph(
        nodes, ir.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims)],
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


def _reference_forward(ir: NetworkIR, x: np.ndarray) -> np.ndarray:
    """The IR's logits in float64 with torch (independent of onnxruntime)."""
    import torch

    z = torch.from_numpy(x.astype(np.float64))
    with torch.no_grad():
        for l in ir.nodes:
            if l.kind in ("flatten", "avgpool"):
                z = z.flatten(1) if l.kind == "flatten" else torch.nn.functional.avg_pool2d(z, l.pool)
                continue
            w = torch.from_numpy(l.masked_weight().astype(np.float64))
            if l.kind == "conv":
                z = torch.nn.functional.conv2d(z, w, stride=l.stride, padding=l.padding)
            else:
                z = z @ w.T
            if l.activation == "relu":
                z = torch.relu(z)
    return z.numpy()


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
    result.extra["synapses_counted_from"] = "ONNX MatMul and Conv weights (non-zero)"
    result.extra["accuracy_key"] = "onnxruntime"
    result.synapses_per_layer = {l.name: int(np.count_nonzero(l.masked_weight())) // (l.pool_fold ** 2)
                                 for l in ir.layers}
    verified = "onnx.checker.check_model"
    if spikes is not None:
        x = np.asarray(spikes, dtype=np.float32)
        want = tuple(ir.input_shape or (ir.input_size,))
        if tuple(x.shape[1:]) != want:
            raise ExportValidationError(f"inputs have shape {x.shape}; network {ir.name!r} takes (N, {', '.join(map(str, want))})")
        t0 = time.perf_counter()
        result.counts = run_onnx(path, x)
        result.seconds["run"] = time.perf_counter() - t0
        ref = _reference_forward(ir, x)
        err = float(np.abs(result.counts - ref).max()) if ref.size else 0.0
        result.extra["max_abs_error_vs_ir"] = err
        if err > 1e-4:
            raise ExportValidationError(f"{path}: onnxruntime logits differ from the network's by {err:.2e}")
        verified += f"; onnxruntime run (max abs error vs the IR {err:.1e})"
    result.files.append({"path": path, "verified_by": verified})
    return result
