"""Networks that DPAP prunes: one generic chain, :class:`SequentialNet`, for every family.

A network is a sequence of :class:`LayerDef`: weight layers (``linear``, ``conv``: no bias, so
a neuron or channel that lost its dendrite is silent), each followed by its neurons (``lif``:
Norse's current-based LIF, ``norse.torch.LIFCell``; ``relu`` for ANNs; nothing after an ANN's
last layer, whose outputs are the logits), with ``avgpool`` and ``flatten`` between them. The
built-in families (:class:`SpikingMLP`, :class:`SpikingCNN`, :class:`ANNMLP`, :class:`ANNCNN`)
and a user's own Norse ``SequentialState`` (``train/user_model.py``) are all such chains, so
DPAP, compaction (``train/compact.py``) and the conversion to the IR read one structure.

Each weight layer has a boolean mask of its weight's shape; the forward pass uses
``weight * mask``, so a pruned synapse is exactly zero. ``forward`` returns the class scores and,
per weight layer, ``(pre, post)``: the layer's input and its neurons' output, time first
``(T, B, ...)`` (ANNs: ``T = 1``), which is what DPAP's scores read. SNN input is
``(T, B, F)`` or ``(T, B, C, H, W)`` (time first, as in Norse); the class score is the output
population's spike count over ``T`` (the readout Lava uses).

With ``input_current=True`` (the *current* encoding of static data, ``docs/data.md``) the first
weight layer receives the analog sample itself at every step and its neurons integrate that
input current, ``W x`` times :meth:`SequentialNet.current_gain`, directly into the membrane
(Norse's ``lif_current_encoder`` dynamics: no synaptic current), which Lava realises as the
population's bias (``bias_mant``).

Neuron parameters are kept in :class:`LIFConfig` (SI units) and saved by ``config()``, because
Norse does not register them in ``state_dict()``.

Timestep masks (spatio-temporal DPAP, docs/dpap.md sec. 7.3-7.4) silence unit ``i`` at step ``t``
in one of two ways, the model's ``time_gate``: ``"hold"`` (the default of every new model) disables
the threshold test there (no spike, no reset: ``v`` keeps its charge); ``"drop"`` (models saved
before ``time_gate`` existed) drops the spike after the LIF update, the neuron resetting anyway.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from dpap_deploy.errors import ModelError

Record = Tuple[torch.Tensor, torch.Tensor]
WEIGHT_KINDS = ("linear", "conv")
#: how a timestep mask silences a unit (docs/dpap.md sec. 7.4): "hold" = threshold test disabled
#: (no spike, no reset), "drop" = spike dropped after the LIF update (the neuron still resets)
TIME_GATES = ("hold", "drop")
#: Norse surrogate methods whose gradient at ``v - v_th = -inf`` is 0 (finite): the ones a "hold"
#: gate (threshold +inf at masked steps) can train through; "circ" gives NaN there, "adjoint" has
#: its own step function
HOLD_METHODS = ("super", "heaviside", "triangle", "tanh", "heavi_erfc")
NEURON_KINDS = ("lif", "relu")
SHAPE_KINDS = ("avgpool", "flatten")


class MaskDenseGradient(torch.autograd.Function):
    """``w * m`` forward; backward passes the whole gradient of the masked weight, ``dL/d(w * m)``,
    to ``w``, pruned entries included (a straight-through mask). A live entry's gradient is the
    same as through ``w * m``; a pruned entry's is the gradient the synapse would get if it were
    there, which Adam's first moment then averages over steps: the regrowth score of sparse
    momentum (Dettmers & Zettlemoyer 2019, arXiv 1907.04840, sec. 3) and RigL (Evci et al. 2020,
    arXiv 1911.11134, sec. 3). The pruned weight itself stays 0: the training loop re-applies the
    masks after every optimiser step."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return w * m

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


@dataclass(frozen=True)
class LIFConfig:
    """Current-based LIF parameters of a population (Norse ``LIFParameters``).

    Attributes:
        tau_syn_inv: inverse synaptic time constant, 1/s (Norse default 200).
        tau_mem_inv: inverse membrane time constant, 1/s (Norse default 100).
        v_th: threshold (dimensionless, Norse units).
        dt: simulation time step, s.
        surrogate: Norse surrogate-gradient method. Norse 1.1.0's ``"super"``
            (SuperSpike) ignores ``alpha``; its gradient is ``1 / (|v - v_th| + 1)^2``.
        v_leak, v_reset: leak and reset potentials (Lava's LIF needs both 0).
        alpha: surrogate-gradient sharpness (Norse default 100).
    """

    tau_syn_inv: float = 200.0
    tau_mem_inv: float = 100.0
    v_th: float = 1.0
    dt: float = 1e-3
    surrogate: str = "super"
    v_leak: float = 0.0
    v_reset: float = 0.0
    alpha: float = 100.0

    def parameters(self):
        """Norse ``LIFParameters`` of this configuration."""
        import norse.torch as norse

        return norse.LIFParameters(tau_syn_inv=torch.as_tensor(self.tau_syn_inv),
                                   tau_mem_inv=torch.as_tensor(self.tau_mem_inv), v_th=torch.as_tensor(self.v_th),
                                   v_leak=torch.as_tensor(self.v_leak), v_reset=torch.as_tensor(self.v_reset),
                                   method=self.surrogate, alpha=torch.as_tensor(self.alpha))


@dataclass(frozen=True)
class LayerDef:
    """One element of a :class:`SequentialNet`.

    Attributes:
        kind: ``linear``, ``conv`` (weight layers), ``lif``, ``relu`` (neurons), ``avgpool``, ``flatten``.
        n: output features (``linear``) or channels (``conv``).
        kernel, stride, padding: of a ``conv`` (pixels; square stride and symmetric zero padding).
        pool: ``avgpool`` factor (kernel = stride, no padding).
        lif: ``lif`` neuron parameters.
    """

    kind: str
    n: int = 0
    kernel: Tuple[int, int] = (0, 0)
    stride: int = 1
    padding: int = 0
    pool: int = 0
    lif: Optional[LIFConfig] = None

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        if self.kind in WEIGHT_KINDS:
            d["n"] = self.n
        if self.kind == "conv":
            d.update(kernel=list(self.kernel), stride=self.stride, padding=self.padding)
        if self.kind == "avgpool":
            d["pool"] = self.pool
        if self.kind == "lif":
            d["lif"] = asdict(self.lif)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LayerDef":
        d = dict(d)
        if "kernel" in d:
            d["kernel"] = tuple(int(k) for k in d["kernel"])
        if d.get("lif") is not None:
            d["lif"] = LIFConfig(**d["lif"])
        return cls(**d)


def linear_def(n: int) -> LayerDef:
    return LayerDef("linear", n=int(n))


def conv_def(n: int, kernel: int = 3, stride: int = 1, padding: Optional[int] = None) -> LayerDef:
    return LayerDef("conv", n=int(n), kernel=(int(kernel), int(kernel)), stride=int(stride),
                    padding=int(kernel) // 2 if padding is None else int(padding))


def lif_def(cfg: LIFConfig = LIFConfig()) -> LayerDef:
    return LayerDef("lif", lif=cfg)


def relu_def() -> LayerDef:
    return LayerDef("relu")


def avgpool_def(p: int) -> LayerDef:
    return LayerDef("avgpool", pool=int(p))


def flatten_def() -> LayerDef:
    return LayerDef("flatten")


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer as DPAP and compaction see it.

    Attributes:
        name: ``conv1``, ``fc1`` ...
        kind: ``"fc"`` or ``"conv"``.
        n_out: neurons (fc) or output channels (conv).
        n_in: input units: features, or channels (conv, and an fc layer after a flatten of a conv map).
        in_block: input features per input unit: ``H*W`` for the fc layer after a flatten of a
            conv map, else 1.
    """

    name: str
    kind: str
    n_out: int
    n_in: int
    in_block: int = 1


@dataclass
class _Plan:
    """What :class:`SequentialNet` derives from its definitions (see :func:`plan`)."""

    steps: List[tuple] = field(default_factory=list)   # ("flatten",), ("pool", p), ("weight", i)
    specs: List[LayerSpec] = field(default_factory=list)
    in_shapes: List[tuple] = field(default_factory=list)   # per weight layer, its input shape
    neurons: List[Optional[LayerDef]] = field(default_factory=list)   # per weight layer: lif, relu or None
    spiking: bool = True


def _where(i: int, d: LayerDef) -> str:
    return f"layer {i} ({d.kind})"


def plan(in_shape: Sequence[int], defs: Sequence[LayerDef]) -> _Plan:
    """Check a chain of definitions and derive its shapes, steps and layer specs.

    The chain is ``(avgpool|flatten)*`` then, per weight layer, ``linear|conv``, its neurons
    (``lif`` or ``relu``; an ANN's last layer may have none), then ``(avgpool|flatten)*``; the last
    element is the output population (SNN) or the last weight layer (ANN logits).

    Raises:
        ModelError: an element in the wrong place or of the wrong shape (names it and why).
    """
    p = _Plan()
    shape = tuple(int(s) for s in in_shape)
    units, block = int(np.prod(shape)), 1   # input units of the next weight layer, features per unit
    from_weights = False                    # the current tensor is a weight layer's (conv) output
    counts = {"linear": 0, "conv": 0}
    kinds = {d.kind for d in defs if d.kind in NEURON_KINDS}
    if len(kinds) > 1:
        raise ModelError("a network mixes lif and relu neurons; use lif (SNN) or relu (ANN) throughout")
    p.spiking = kinds != {"relu"}
    pending = None  # a weight layer still waiting for its neurons
    for i, d in enumerate(defs):
        if d.kind in NEURON_KINDS:
            if pending is None:
                raise ModelError(f"{_where(i, d)}: neurons must follow a Linear or Conv2d layer")
            p.neurons.append(d)
            pending = None
            continue
        if pending is not None:
            if p.spiking:
                raise ModelError(f"{_where(i - 1, defs[i - 1])}: a weight layer must be followed by its LIF neurons")
            p.neurons.append(None)
            pending = None
        if d.kind == "flatten":
            if len(shape) != 3:
                raise ModelError(f"{_where(i, d)}: flatten takes a (C, H, W) map, got {shape}")
            if from_weights:
                units, block = shape[0], shape[1] * shape[2]
            shape = (int(np.prod(shape)),)
            p.steps.append(("flatten",))
        elif d.kind == "avgpool":
            if len(shape) != 3 or d.pool < 1 or min(shape[1:]) < d.pool:
                raise ModelError(f"{_where(i, d)}: average pooling by {d.pool} needs a (C, H, W) map of at least "
                                 f"{d.pool} x {d.pool}, got {shape}")
            shape = (shape[0], shape[1] // d.pool, shape[2] // d.pool)
            if from_weights:
                block = shape[1] * shape[2]
            p.steps.append(("pool", d.pool))
        elif d.kind in WEIGHT_KINDS:
            if d.n < 1:
                raise ModelError(f"{_where(i, d)}: needs at least one output, got {d.n}")
            counts[d.kind] += 1
            if d.kind == "conv":
                if len(shape) != 3:
                    raise ModelError(f"{_where(i, d)}: Conv2d takes (C, H, W) input, got {shape}")
                kh, kw = d.kernel
                ho = (shape[1] + 2 * d.padding - kh) // d.stride + 1
                wo = (shape[2] + 2 * d.padding - kw) // d.stride + 1
                if min(kh, kw, d.stride) < 1 or ho < 1 or wo < 1:
                    raise ModelError(f"{_where(i, d)}: kernel {d.kernel}, stride {d.stride}, padding {d.padding} "
                                     f"do not fit the input {shape}")
                spec = LayerSpec(f"conv{counts['conv']}", "conv", d.n, shape[0], 1)
                out = (d.n, ho, wo)
            else:
                if len(shape) != 1:
                    raise ModelError(f"{_where(i, d)}: Linear takes flat input, got {shape}; put a Flatten before it")
                spec = LayerSpec(f"fc{counts['linear']}", "fc", d.n, units, block)
                out = (d.n,)
            p.in_shapes.append(shape)
            p.specs.append(spec)
            p.steps.append(("weight", len(p.specs) - 1))
            shape, from_weights, pending = out, True, d
            units, block = (d.n, 1)
        else:
            raise ModelError(f"{_where(i, d)}: unknown kind {d.kind!r}")
    if pending is not None:
        if p.spiking:
            raise ModelError(f"{_where(len(defs) - 1, defs[-1])}: the output layer needs its LIF neurons (the class "
                             "score is the output population's spike count)")
        p.neurons.append(None)
    if not p.specs:
        raise ModelError("a network needs at least one Linear or Conv2d layer")
    if p.steps[-1][0] != "weight" or p.specs[-1].kind != "fc":
        raise ModelError("the network must end with a Linear layer (and its neurons) giving one output per class")
    return p


def _lif_cell(cfg: LIFConfig):
    import norse.torch as norse

    return norse.LIFCell(p=cfg.parameters(), dt=cfg.dt)


class SequentialNet(nn.Module):
    """A chain of weight layers, neurons, pooling and flatten (see the module docstring).

    Args:
        in_shape: one sample's shape per time step: ``(F,)`` or ``(C, H, W)``.
        defs: the chain (:func:`linear_def`, :func:`conv_def`, :func:`lif_def`, :func:`relu_def`,
            :func:`avgpool_def`, :func:`flatten_def`).
        init_gain: multiplies PyTorch's default initialisation of every weight (so that a random
            SNN spikes from the first batch).
        family: the model family's name, kept in ``config()``.
        input_current: the first layer's input is an analog current (current encoding), not spikes.
        time_gate: how timestep masks silence a unit (:meth:`set_time_mask`): ``"hold"`` (default:
            threshold test disabled, no spike and no reset) or ``"drop"`` (spike dropped after the
            LIF update; the behaviour of models saved before this option, which load as ``"drop"``).

    Raises:
        ModelError: a chain :func:`plan` refuses, or a ``time_gate`` not in :data:`TIME_GATES`.
    """

    def __init__(self, in_shape: Sequence[int], defs: Sequence[LayerDef], init_gain: float = 1.0,
                 family: str = "sequential", input_current: bool = False, time_gate: str = "hold"):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.defs = tuple(defs)
        self.init_gain = float(init_gain)
        self.family = family
        self.input_current = bool(input_current)
        if time_gate not in TIME_GATES:
            raise ModelError(f"time_gate {time_gate!r} is not one of {TIME_GATES}")
        self.time_gate = time_gate
        self._plan = plan(self.in_shape, self.defs)
        if self.input_current and (not self.spiking or self._plan.steps[0] != ("weight", 0)):
            raise ModelError("current encoding drives the first population of a spiking network whose first "
                             "element is a Linear layer")
        layers = []
        for spec, shp in zip(self._plan.specs, self._plan.in_shapes):
            if spec.kind == "conv":
                d = self._weight_def(len(layers))
                layers.append(nn.Conv2d(shp[0], d.n, d.kernel, stride=d.stride, padding=d.padding, bias=False))
            else:
                layers.append(nn.Linear(shp[0], spec.n_out, bias=False))
        self.layers = nn.ModuleList(layers)
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.mul_(self.init_gain)
        for i, layer in enumerate(self.layers):
            self.register_buffer(f"mask{i}", torch.ones_like(layer.weight, dtype=torch.bool))
        if self.spiking:
            self.cells = nn.ModuleList(_lif_cell(d.lif) for d in self._plan.neurons)

    # -- structure -------------------------------------------------------------------------
    @property
    def spiking(self) -> bool:
        return self._plan.spiking

    def _weight_def(self, l: int) -> LayerDef:
        return [d for d in self.defs if d.kind in WEIGHT_KINDS][l]

    def neuron_def(self, l: int) -> Optional[LayerDef]:
        """Layer ``l``'s neurons: a ``lif`` or ``relu`` definition, or None (an ANN's logits)."""
        return self._plan.neurons[l]

    def steps(self) -> List[tuple]:
        """The forward pass in order: ``("flatten",)``, ``("pool", p)``, ``("weight", l)``."""
        return list(self._plan.steps)

    def layer_input_shape(self, l: int) -> tuple:
        """The shape weight layer ``l`` receives per sample and step."""
        return self._plan.in_shapes[l]

    def specs(self) -> List[LayerSpec]:
        return list(self._plan.specs)

    def layer_names(self) -> List[str]:
        return [s.name for s in self._plan.specs]

    def widths(self) -> List[int]:
        """Output units per weight layer (neurons or channels)."""
        return [s.n_out for s in self._plan.specs]

    @property
    def sizes(self) -> Tuple[int, ...]:
        """``(F, N_1, ..., N_L)`` of a network of fully connected layers."""
        return (int(np.prod(self.in_shape)), *self.widths())

    @property
    def fcs(self) -> List[nn.Linear]:
        return [l for l in self.layers if isinstance(l, nn.Linear)]

    @property
    def n_conv(self) -> int:
        return sum(1 for s in self._plan.specs if s.kind == "conv")

    @property
    def channels(self) -> Tuple[int, ...]:
        return tuple(s.n_out for s in self._plan.specs if s.kind == "conv")

    @property
    def hidden(self) -> Tuple[int, ...]:
        return tuple(s.n_out for s in self._plan.specs if s.kind == "fc")[:-1]

    @property
    def flat_hw(self) -> int:
        """Pixels per channel at the flatten after the conv layers (1 without one)."""
        fc = [s for s in self._plan.specs if s.kind == "fc"]
        return fc[0].in_block if fc else 1

    @property
    def lif(self) -> Optional[LIFConfig]:
        """The first population's LIF parameters (None for ANNs)."""
        return self._plan.neurons[0].lif if self.spiking else None

    def resized(self, widths: Sequence[int]) -> "SequentialNet":
        """The same chain with ``widths`` output units per weight layer (weights initialised anew)."""
        it = iter(int(w) for w in widths)
        defs = [replace(d, n=next(it)) if d.kind in WEIGHT_KINDS else d for d in self.defs]
        return self._like(defs)

    def _like(self, defs) -> "SequentialNet":
        net = self.__class__.__new__(self.__class__)  # keeps the family's class without its constructor
        SequentialNet.__init__(net, self.in_shape, defs, self.init_gain, self.family, self.input_current,
                               self.time_gate)
        return net

    def config(self) -> dict:
        """Everything needed to rebuild the network (JSON-safe): :func:`model_from_config`."""
        return {"kind": "sequential", "family": self.family, "in_shape": list(self.in_shape),
                "defs": [d.to_dict() for d in self.defs], "init_gain": self.init_gain,
                "input_current": self.input_current, "time_gate": self.time_gate}

    # -- masks -----------------------------------------------------------------------------
    @property
    def masks(self) -> List[torch.Tensor]:
        return [getattr(self, f"mask{i}") for i in range(len(self.layers))]

    def masked_weights(self) -> List[torch.Tensor]:
        """Each weight layer's weight times its mask. With ``dense_gradient`` set (a pruner that
        regrows synapses asks for it, ``train/pruners.py``), the backward pass gives a pruned weight
        the gradient its synapse would have, instead of 0 (:class:`MaskDenseGradient`)."""
        if getattr(self, "dense_gradient", False):
            return [MaskDenseGradient.apply(layer.weight, m) for layer, m in zip(self.layers, self.masks)]
        return [layer.weight * m for layer, m in zip(self.layers, self.masks)]

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned weight in place (called after each optimizer step)."""
        for layer, m in zip(self.layers, self.masks):
            layer.weight.mul_(m)

    def unit_connectivity(self, l: int) -> np.ndarray:
        """``(n_out, n_in units)`` bool: output unit ``i`` has a surviving synapse from input unit ``j``."""
        m = self.masks[l].cpu().numpy()
        spec = self._plan.specs[l]
        if m.ndim == 4:  # conv: any over the kernel
            return m.any(axis=(2, 3))
        if spec.in_block > 1:  # fc after flatten: any over the unit's H*W features
            return m.reshape(m.shape[0], spec.n_in, spec.in_block).any(axis=2)
        return m

    @property
    def dense_widths(self) -> List[int]:
        return list(getattr(self, "_dense_widths", None) or self.widths())

    @dense_widths.setter
    def dense_widths(self, w: Sequence[int]) -> None:
        self._dense_widths = [int(x) for x in w]

    # -- timestep masks (spatio-temporal DPAP, docs/dpap.md sec. 7.3) -------------------------
    def time_mask(self, l: int) -> Optional[torch.Tensor]:
        """Layer ``l``'s timestep mask ``(units, T)`` bool (False: unit silent at that step), or None."""
        return getattr(self, f"tmask{l}", None)

    @torch.no_grad()
    def set_time_mask(self, l: int, mask: torch.Tensor) -> None:
        """Silence unit ``i`` (neuron; conv: channel, all its pixels) of layer ``l`` at within-sample
        step ``t`` where ``mask[i, t]`` is False (``mask``: ``(units, T)`` bool), so nothing
        downstream hears it at that step. How depends on the model's ``time_gate``
        (docs/dpap.md sec. 7.4):

        - ``"hold"``: the unit integrates as usual (``i`` and ``v`` update) but its threshold is
          ``+inf`` at that step: no spike and no reset, so ``v`` carries its charge on and the unit
          fires at the next unmasked step if ``v`` is then above threshold;
        - ``"drop"``: the spike is dropped after the LIF update; the unit still resets (its charge
          is lost), as if it had spiked.

        A buffer, so it is saved with the model.

        Raises:
            ValueError: a mask not ``(units, T)``.
            ModelError: ``"hold"`` on a population whose surrogate method is not in :data:`HOLD_METHODS`.
        """
        mask = mask.to(torch.bool)
        if mask.dim() != 2 or mask.shape[0] != self.widths()[l]:
            raise ValueError(f"layer {self.layer_names()[l]}: time mask must be ({self.widths()[l]}, T), "
                             f"got {tuple(mask.shape)}")
        if self.time_gate == "hold":
            self._hold_method(l)
        if self.time_mask(l) is None or self.time_mask(l).shape != mask.shape:
            self.register_buffer(f"tmask{l}", mask.clone().to(self.masks[l].device))
        else:
            self.time_mask(l).copy_(mask)

    def active_steps(self, time_steps: int) -> int:
        """Time steps the network still needs: the window shortened by the steps pruned for
        *every* unit of every timestep-pruned layer at its end (``time_steps`` when none)."""
        masks = [m for m in (self.time_mask(l) for l in range(len(self.layers))) if m is not None]
        if not masks:
            return int(time_steps)
        last = -1
        for m in masks:
            cols = torch.nonzero(m[:, :time_steps].any(0)).flatten()
            last = max(last, int(cols[-1]) if len(cols) else -1)
        return max(1, last + 1)

    def _hold_method(self, l: int) -> str:
        d = self._plan.neurons[l]
        if d is None or d.lif is None:  # ANN units: no threshold to hold
            return ""
        method = d.lif.surrogate
        if method not in HOLD_METHODS:
            raise ModelError(f"layer {self.layer_names()[l]}: a 'hold' timestep gate sets the threshold to +inf at "
                             f"masked steps, which Norse's surrogate {method!r} cannot differentiate (use one of "
                             f"{HOLD_METHODS}, or time_gate='drop')")
        return method

    def _held(self, l: int, p, t: int, like: torch.Tensor):
        """Norse ``LIFParameters`` ``p`` with ``v_th = +inf`` where layer ``l``'s time mask is False
        at step ``t`` (``"hold"`` gate), shaped to broadcast over the population's state ``like``:
        ``(N,)`` for fc, ``(C, 1, 1)`` for conv; ``p`` itself without a mask."""
        m = self.time_mask(l)
        if m is None:
            return p
        self._hold_method(l)
        keep = m[:, t].to(like.device)
        v_th = torch.where(keep, torch.as_tensor(p.v_th, dtype=like.dtype, device=like.device),
                           torch.tensor(float("inf"), dtype=like.dtype, device=like.device))
        return p._replace(v_th=v_th.view(-1, 1, 1) if like.dim() == 4 else v_th)

    def _gate(self, l: int, z: torch.Tensor, t: int) -> torch.Tensor:
        """``"drop"`` gate: ``z`` times layer ``l``'s time mask at step ``t`` (``"hold"``: ``z`` as it is,
        the population already did not fire)."""
        m = self.time_mask(l)
        if m is None or self.time_gate == "hold":
            return z
        g = m[:, t].to(z.dtype)
        return z * (g.view(1, -1, 1, 1) if z.dim() == 4 else g)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that first creates the timestep-mask buffers it finds."""
        for key, value in state_dict.items():
            if key.startswith("tmask") and self.time_mask(int(key[5:])) is None:
                self.register_buffer(key, torch.zeros_like(value, dtype=torch.bool))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Record]]:
        """Run the network.

        Args:
            x: SNN: ``(T, B, *in_shape)`` spikes (with ``input_current``: analog values, the same
                at every step); ANN: ``(B, *in_shape)``.

        Returns:
            ``(scores, records)``: class scores ``(B, n_classes)`` (SNN: output spike counts; ANN:
            logits) and per weight layer ``(input (T, B, ...), output (T, B, ...))`` (ANN: ``T = 1``).

        Raises:
            ValueError: an input of the wrong shape.
        """
        lead = 2 if self.spiking else 1
        if x.dim() != lead + len(self.in_shape) or tuple(x.shape[lead:]) != self.in_shape:
            want = ("T, B, " if self.spiking else "B, ") + ", ".join(map(str, self.in_shape))
            raise ValueError(f"input must be ({want}), got {tuple(x.shape)}")
        if not self.spiking:
            return self._forward_ann(x)
        x = x[: self.active_steps(x.shape[0])]  # a window shortened by timestep pruning
        weights = self.masked_weights()
        states: List[Optional[object]] = [None] * len(self.layers)
        pre: List[List[torch.Tensor]] = [[] for _ in self.layers]
        post: List[List[torch.Tensor]] = [[] for _ in self.layers]
        for t in range(x.shape[0]):
            z = x[t]
            for step in self._plan.steps:
                if step[0] != "weight":
                    z = _shape_step(step, z)
                    continue
                l = step[1]
                pre[l].append(z)
                z, states[l] = self._population(l, self._synapses(l, z, weights[l]), states[l], t)
                z = self._gate(l, z, t)
                post[l].append(z)
        records = [(torch.stack(a), torch.stack(b)) for a, b in zip(pre, post)]
        return records[-1][1].sum(0), records

    def _synapses(self, l: int, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dim() == 4:
            d = self._weight_def(l)
            return torch.nn.functional.conv2d(z, w, stride=d.stride, padding=d.padding)
        return torch.nn.functional.linear(z, w)

    def _population(self, l: int, current: torch.Tensor, state, t: int = 0):
        """One step ``t`` of layer ``l``'s neurons driven by ``current`` ``(B, N)`` / ``(B, C, H, W)``;
        returns ``(spikes, state)``. With a ``"hold"`` time gate and a time mask the step is Norse's own
        functional step with :meth:`_held` parameters (the same ``LIFCell`` initial state)."""
        hold = self.time_gate == "hold" and self.time_mask(l) is not None
        cell = self.cells[l]
        if l == 0 and self.input_current:  # the input current drives the membrane directly (bias)
            from norse.torch.functional.lif import lif_current_encoder

            v = torch.zeros_like(current) if state is None else state
            p = self._held(l, cell.p, t, current) if hold else cell.p
            return lif_current_encoder(current * self.current_gain(), v, p, cell.dt)
        if not hold:
            return cell(current, state)
        from norse.torch.functional.lif import lif_feed_forward_step

        state = state if state is not None else cell.state_fallback(current)  # what LIFCell.forward does
        return lif_feed_forward_step(current, state, self._held(l, cell.p, t, current), cell.dt)

    def current_gain(self) -> float:
        """``tau_syn / dt`` of the first population: with current encoding, ``W x`` times this gain
        drives its membrane. It is the synaptic current a Norse ``LIFCell`` settles at when it gets
        the constant input ``W x`` every step (``i = W x / (dt / tau_syn)``), so both encodings drive
        the first population with the same steady current; the bias path only skips the synaptic
        low-pass (docs/data.md, current encoding)."""
        c = self._plan.neurons[0].lif
        return 1.0 / (c.dt * c.tau_syn_inv)

    def _forward_ann(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Record]]:
        records: List[Record] = []
        weights = self.masked_weights()
        for step in self._plan.steps:
            if step[0] != "weight":
                x = _shape_step(step, x)
                continue
            l = step[1]
            inp = x
            x = self._synapses(l, x, weights[l])
            if self._plan.neurons[l] is not None:
                x = torch.relu(x)
            records.append((inp[None], x[None]))
        return x, records


def _shape_step(step: tuple, z: torch.Tensor) -> torch.Tensor:
    if step[0] == "flatten":
        return z.flatten(1)
    return torch.nn.functional.avg_pool2d(z, step[1])


# -- the built-in families' chains --------------------------------------------------------
def mlp_defs(widths: Sequence[int], neurons: Optional[LayerDef], flat_input: bool = False) -> List[LayerDef]:
    """``[flatten]`` + ``linear(w), neurons`` per width; an ANN (``neurons`` relu) ends in logits."""
    defs = [flatten_def()] if flat_input else []
    for i, w in enumerate(widths):
        defs.append(linear_def(w))
        if neurons is not None and (neurons.kind == "lif" or i < len(widths) - 1):
            defs.append(neurons)
    return defs


def cnn_defs(channels: Sequence[int], hidden: Sequence[int], n_classes: int, neurons: LayerDef,
             kernel: int = 3, pool: int = 2) -> List[LayerDef]:
    """``Conv2d(k, padding=k//2) -> neurons -> AvgPool2d(pool)`` per channel count, flatten,
    then the fully connected layers (:func:`mlp_defs`)."""
    defs: List[LayerDef] = []
    for c in channels:
        defs += [conv_def(c, kernel), neurons, avgpool_def(pool)]
    return defs + [flatten_def()] + mlp_defs([*hidden, n_classes], neurons)


class SpikingMLP(SequentialNet):
    """Feed-forward LIF network, e.g. 64-256-128-10.

    Args:
        sizes: ``(F, N_1, ..., N_L)`` neurons per population, input first.
        lif: neuron parameters, shared by all populations.
        init_gain: multiplies PyTorch's default ``Linear`` initialisation so that a random
            network spikes from the first batch.
        in_shape: a ``(C, H, W)`` input of ``F`` features that each step flattens (event frames).
        input_current: current encoding (see the module docstring).
        time_gate: ``"hold"`` or ``"drop"`` (:class:`SequentialNet`).
    """

    def __init__(self, sizes: Sequence[int], lif: LIFConfig = LIFConfig(), init_gain: float = 2.0,
                 in_shape: Optional[Sequence[int]] = None, input_current: bool = False, time_gate: str = "hold"):
        if len(sizes) < 2:
            raise ModelError(f"sizes must name an input and at least one layer, got {tuple(sizes)}")
        shape = tuple(in_shape) if in_shape is not None else (int(sizes[0]),)
        if int(np.prod(shape)) != int(sizes[0]):
            raise ModelError(f"input shape {shape} does not have {sizes[0]} features")
        super().__init__(shape, mlp_defs(sizes[1:], lif_def(lif), len(shape) > 1), init_gain, "snn-mlp",
                         input_current, time_gate)


class SpikingCNN(SequentialNet):
    """Convolutional LIF network, time first: ``(T, B, C, H, W)`` in, spike counts out.

    Blocks ``Conv2d(k, padding=k//2) -> LIF -> AvgPool2d(pool)`` per entry of ``channels``,
    then flatten and ``Linear -> LIF`` per entry of ``hidden`` and the output population.
    E.g. the paper's 2C2F: ``channels=(15, 40), hidden=(300,)``.

    Args:
        in_shape: ``(C, H, W)`` of one input frame.
        channels: output channels per conv block.
        hidden: hidden fully connected populations.
        n_classes: output neurons.
        kernel, pool: conv kernel size and average-pooling factor.
        time_gate: ``"hold"`` or ``"drop"`` (:class:`SequentialNet`).
    """

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int], n_classes: int,
                 kernel: int = 3, pool: int = 2, lif: LIFConfig = LIFConfig(), init_gain: float = 8.0,
                 time_gate: str = "hold"):
        super().__init__(in_shape, cnn_defs(channels, hidden, n_classes, lif_def(lif), kernel, pool), init_gain,
                         "snn-cnn", time_gate=time_gate)


class ANNMLP(SequentialNet):
    """Plain PyTorch MLP with ReLU (DPAP's ANN variant, paper eqs. 12-13), logits out.

    Input ``(B, F)``; records are ``(T=1, B, N)`` ReLU activations (the output layer: logits).
    """

    def __init__(self, sizes: Sequence[int], init_gain: float = 1.0, in_shape: Optional[Sequence[int]] = None):
        shape = tuple(in_shape) if in_shape is not None else (int(sizes[0]),)
        super().__init__(shape, mlp_defs(sizes[1:], relu_def(), len(shape) > 1), init_gain, "ann-mlp")


class ANNCNN(SequentialNet):
    """Plain PyTorch CNN with ReLU: ``Conv2d -> ReLU -> AvgPool2d`` blocks, flatten, ``Linear -> ReLU``, logits.

    Input ``(B, C, H, W)``; records are ``(T=1, B, ...)`` activations.
    """

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int], n_classes: int,
                 kernel: int = 3, pool: int = 2, init_gain: float = 1.0):
        super().__init__(in_shape, cnn_defs(channels, hidden, n_classes, relu_def(), kernel, pool), init_gain, "ann-cnn")


#: the class each family's saved networks are rebuilt as (others: SequentialNet)
FAMILY_CLASSES = {"snn-mlp": SpikingMLP, "snn-cnn": SpikingCNN, "ann-mlp": ANNMLP, "ann-cnn": ANNCNN}

# the masked-network base every pruner and exporter expects
MaskedNet = SequentialNet


def model_from_config(cfg: dict) -> SequentialNet:
    """Rebuild a network from its ``config()`` (saved models and checkpoints). A configuration
    without ``time_gate`` (saved before it existed) rebuilds a ``"drop"`` model, as it was trained.

    Raises:
        ModelError: not a configuration this version writes (names what is wrong).
    """
    try:
        if cfg.get("kind") != "sequential":
            raise ModelError(f"model configuration of kind {cfg.get('kind')!r}; this version reads 'sequential'")
        cls = FAMILY_CLASSES.get(cfg.get("family"), SequentialNet)
        net = cls.__new__(cls)
        SequentialNet.__init__(net, cfg["in_shape"], [LayerDef.from_dict(d) for d in cfg["defs"]],
                               float(cfg.get("init_gain", 1.0)), str(cfg.get("family", "sequential")),
                               bool(cfg.get("input_current", False)), str(cfg.get("time_gate", "drop")))
        return net
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"not a model configuration ({type(exc).__name__}: {exc})") from None
