"""A user's own network: ``--model PATH.py:FUNCTION`` (or a module handed to ``dpap_deploy.deploy``).

``FUNCTION(input_shape, n_classes)`` returns a ``norse.torch.SequentialState`` (or a
``torch.nn.Sequential``) built from the layers we can deploy; it is run one time step at a time
(``(B, *input_shape)`` per step, as Norse's ``SequentialState`` runs). :func:`from_torch` takes it
apart into a :class:`~dpap_deploy.train.models.SequentialNet` with the **same initial weights and
neuron parameters**, so DPAP trains it, the IR exports it and Lava runs it like a built-in family.

Deployable layers (:data:`SUPPORTED`):

* ``torch.nn.Linear(bias=False)``, ``torch.nn.Conv2d(bias=False)`` (groups 1, dilation 1, zero
  padding, the same stride and padding in both directions): the synapses; a bias has no
  deployment yet (Lava's LIF bias adds to the membrane, PyTorch's to the input current);
* ``norse.torch.LIFCell`` (or ``LIF``) after each of them: the neurons, with one value per
  population of ``tau_syn_inv``, ``tau_mem_inv``, ``v_th`` and ``v_leak = v_reset = 0`` (what
  Lava's LIF computes); ``torch.nn.ReLU`` instead for an ANN;
* ``torch.nn.AvgPool2d`` (kernel = stride, no padding) and ``torch.nn.Flatten()`` between them.

Anything else is an :class:`~dpap_deploy.errors.UnsupportedLayerError` that lists every
offending layer with its position and says what is supported.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from dpap_deploy.errors import ModelError, UnsupportedLayerError
from dpap_deploy.train import models as M

SUPPORTED = ("torch.nn.Linear(bias=False), torch.nn.Conv2d(bias=False, groups=1, dilation=1, zero padding), "
             "norse.torch.LIFCell / LIF (one value per population, v_leak = v_reset = 0), torch.nn.ReLU (ANNs), "
             "torch.nn.AvgPool2d(kernel = stride, no padding), torch.nn.Flatten()")


def parse_spec(spec: str) -> Tuple[str, str]:
    """``(path, function)`` of ``PATH.py:FUNCTION`` (``FUNCTION`` defaults to ``build``).

    Raises:
        ModelError: not of that form.
    """
    path, sep, fn = spec.rpartition(":") if spec.count(":") and not spec.endswith(".py") else (spec, "", "build")
    if not path.endswith(".py") or not fn.isidentifier():
        raise ModelError(f"--model {spec!r}: expected PATH.py:FUNCTION (a Python file and the function in it that "
                         "returns the network)")
    return os.path.expanduser(path), fn


def _import(path: str, spec: str):
    if not os.path.isfile(path):
        raise ModelError(f"--model {spec!r}: file {path!r} does not exist")
    name = f"dpap_user_model_{abs(hash(os.path.abspath(path)))}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report what it raised, where
        raise ModelError(f"--model {spec!r}: importing {path} raised {type(exc).__name__}: {exc}") from None
    sys.modules.pop(name, None)
    return module


def load_user_model(spec: str, input_shape: Sequence[int], n_classes: int, input_current: bool = False) -> M.SequentialNet:
    """Build the user's network for ``input_shape`` (one step of one sample) and ``n_classes``.

    Raises:
        ModelError: the file or function is missing, raises, or returns something that is not a
            ``torch.nn.Sequential`` / ``SequentialState``, or a chain in the wrong order or shape.
        UnsupportedLayerError: layers we cannot deploy (every one named, with what is supported).
    """
    path, fn = parse_spec(spec)
    module = _import(path, spec)
    build = getattr(module, fn, None)
    if not callable(build):
        raise ModelError(f"--model {spec!r}: {path} has no function {fn!r}")
    try:
        net = build(tuple(int(s) for s in input_shape), int(n_classes))
    except Exception as exc:
        raise ModelError(f"--model {spec!r}: {fn}{tuple(input_shape), n_classes} raised {type(exc).__name__}: {exc}") \
            from None
    return from_torch(net, input_shape, family=spec, input_current=input_current)


def from_torch(net: nn.Module, input_shape: Sequence[int], family: str = "user", input_current: bool = False
               ) -> M.SequentialNet:
    """The :class:`~dpap_deploy.train.models.SequentialNet` of a ``SequentialState`` / ``Sequential``,
    with its weights and neuron parameters.

    Args:
        net: the user's network (see the module docstring).
        input_shape: ``(F,)`` or ``(C, H, W)`` of one sample per step.
        family: what the network is called in messages and saved configurations.
        input_current: the first population is driven by the analog input (current encoding).

    Raises:
        ModelError, UnsupportedLayerError: as :func:`load_user_model`.
    """
    if not isinstance(net, nn.Sequential):
        raise ModelError(f"{family}: expected a norse.torch.SequentialState or torch.nn.Sequential, got "
                         f"{type(net).__name__}")
    defs, sources, bad = [], [], []
    for i, m in enumerate(_flat(net)):
        d, why = _layer_def(m)
        if d is None:
            bad.append(f"#{i} {type(m).__name__}{f' ({why})' if why else ''}")
        else:
            defs.append(d)
            sources.append(m)
    if bad:
        raise UnsupportedLayerError(f"{family}: layers we cannot deploy: {'; '.join(bad)}. Supported: {SUPPORTED}")
    try:
        model = M.SequentialNet(input_shape, defs, 1.0, family, input_current)
    except ModelError as exc:
        raise ModelError(f"{family}: {exc}") from None
    weights = [m for m in sources if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for layer, src in zip(model.layers, weights):
            layer.weight.copy_(src.weight.detach().to(layer.weight.dtype))
    return model


def _flat(net: nn.Module) -> List[nn.Module]:
    out: List[nn.Module] = []
    for m in net.children():
        out += _flat(m) if type(m) in (nn.Sequential,) or type(m).__name__ == "SequentialState" else [m]
    return out


def _layer_def(m: nn.Module) -> Tuple[Optional[M.LayerDef], str]:
    """The :class:`LayerDef` of one module, or ``(None, why)``."""
    import norse.torch as norse

    if isinstance(m, nn.Linear):
        return (M.linear_def(m.out_features), "") if m.bias is None else (None, "bias=True; use bias=False")
    if isinstance(m, nn.Conv2d):
        return _conv_def(m)
    if isinstance(m, (norse.LIFCell, norse.LIF)):
        return _lif(m)
    if isinstance(m, nn.ReLU):
        return M.relu_def(), ""
    if isinstance(m, nn.AvgPool2d):
        k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
        if k[0] != k[1] or k != s or _pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override:
            return None, f"kernel {k}, stride {s}, padding {m.padding}: needs a square kernel equal to the stride, " \
                         "no padding"
        return M.avgpool_def(k[0]), ""
    if isinstance(m, nn.Flatten):
        return (M.flatten_def(), "") if (m.start_dim, m.end_dim) == (1, -1) else \
            (None, f"start_dim={m.start_dim}, end_dim={m.end_dim}; use Flatten() on (B, C, H, W)")
    return None, ""


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv_def(m: nn.Conv2d) -> Tuple[Optional[M.LayerDef], str]:
    s, p = _pair(m.stride), _pair(m.padding)
    why = []
    if m.bias is not None:
        why.append("bias=True; use bias=False")
    if m.groups != 1 or _pair(m.dilation) != (1, 1):
        why.append(f"groups={m.groups}, dilation={m.dilation}; needs 1")
    if isinstance(m.padding, str) or m.padding_mode != "zeros" or s[0] != s[1] or p[0] != p[1]:
        why.append(f"stride {m.stride}, padding {m.padding!r} ({m.padding_mode}); needs equal integers, zero padding")
    if why:
        return None, "; ".join(why)
    return M.LayerDef("conv", n=m.out_channels, kernel=tuple(int(k) for k in m.kernel_size), stride=int(s[0]),
                      padding=int(p[0])), ""


def _lif(m) -> Tuple[Optional[M.LayerDef], str]:
    p = m.p
    values = {}
    for key in ("tau_syn_inv", "tau_mem_inv", "v_th", "v_leak", "v_reset", "alpha"):
        t = torch.as_tensor(getattr(p, key))
        if t.numel() != 1:
            return None, f"{key} has {t.numel()} values; one per population is supported"
        values[key] = float(t)
    if values["v_leak"] != 0 or values["v_reset"] != 0:
        return None, f"v_leak = {values['v_leak']:g}, v_reset = {values['v_reset']:g}; Lava's LIF needs both 0"
    if values["tau_syn_inv"] <= 0 or values["tau_mem_inv"] <= 0 or values["v_th"] <= 0:
        return None, "tau_syn_inv, tau_mem_inv and v_th must be > 0"
    return M.lif_def(M.LIFConfig(dt=float(m.dt), surrogate=str(p.method), **values)), ""
