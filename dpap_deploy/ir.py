"""The one intermediate representation (IR) of a trained network.

Plain dataclasses holding numpy arrays, no torch (as NIR's ``nir/ir`` does): everything
downstream (quantisation, every export target, the emulator, the core mapper, the energy
count and the report) reads a :class:`NetworkIR`, never the torch module.

A network is a chain of **nodes**, input first: weight layers (:class:`FCLayer`,
:class:`ConvLayer`: synapses into a population of current-based LIF neurons, or ReLU / identity
units for ANNs) and the shape nodes between them (:class:`Flatten`, and :class:`AvgPool` where a
pooling could not be folded into the next layer's weights). ``NetworkIR.layers`` is the weight
layers alone, which is what most consumers iterate; exporters that lay out tensors (Lava, netx,
NIR, ONNX) walk ``NetworkIR.nodes`` and meet a flatten as a node, never re-deriving it. The last
layer's spike counts over ``T`` time steps are the class scores (a leaky-integrator last layer read
from a NIR graph: its membrane, ``readout = "membrane"``). A fully connected layer may also feed its
own spikes back into itself one step later (``FCLayer.recurrent``), and any weight layer may add a
constant ``input_bias``; consumers that cannot run these refuse them naming the layer
(:meth:`NetworkIR.require_features`). After DPAP and compaction the
shapes are the pruned network's real shapes; pruned synapses are ``False`` in ``mask`` (and zero
in ``weight``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import List, Optional, Union

import numpy as np
import scipy.sparse as sp

from dpap_deploy.errors import IRError
from dpap_deploy.fileio import atomic_path

IR_FORMAT = "dpap-deploy-ir/4"
# /1: weight layers only, flatten implied; /2: no ``time_gate`` (timestep masks drop spikes after the
# reset, read as "drop"); /3: ``time_gate`` per layer ("hold" for new models), so older code, which
# would simulate a hold mask as drop, refuses the file instead; /4: per-layer ``bias``, ``delay``,
# conv ``groups``/``dilation``, ``FixedPoint.bias_mant`` and sigma-delta (``"sdnn"``) layers (lava-dl
# netx files), ``input_bias``, ``recurrent``, ``FixedPoint.recurrent_weight``, the LIF / IF / LI neuron
# variants of :class:`LIFNeurons` and the ``"membrane"`` readout (NIR graphs of other frameworks), which
# older code would silently drop or run wrongly
IR_FORMATS_READ = ("dpap-deploy-ir/1", "dpap-deploy-ir/2", "dpap-deploy-ir/3", IR_FORMAT)
#: ``NetworkIR.readout``: class = argmax of output spike counts (SNN), of the logits (ANN), or of the last
#: population's membrane potential at the last step (a leaky-integrator readout layer, NIR ``LI``)
READOUTS = ("spike_count", "logits", "membrane")
#: how the first weight layer receives the input: spikes through its synapses, or (current encoding)
#: the analog sample as a constant input current into its neurons (docs/data.md)
INPUT_ENCODINGS = ("spikes", "current")
_UNROLLED: dict = {}  # ConvLayer.unrolled's last results, by kernel contents and geometry
#: "lif": a spiking population; relu/identity: ANN layers; "sdnn": lava-dl sigma-delta neurons (graded
#: spikes, :class:`SigmaDeltaNeurons`), read from netx files; the mapper counts them, ``loihi-sim`` runs
#: fully connected sigma-delta networks (``export/lava_sim.py``), the emulator and the writers refuse them
ACTIVATIONS = ("lif", "relu", "identity", "sdnn")
#: optional per-layer features a consumer must take explicitly (:meth:`NetworkIR.require_features`)
#: (lava-dl netx: membrane ``bias``, synaptic ``delay``, conv ``groups``/``dilation``; NIR: ``input_bias``,
#: ``recurrent`` weights, the neuron variants ``if`` (no leak) and ``li`` (no spikes))
FEATURES = ("bias", "delay", "groups", "dilation", "input_bias", "recurrent", "if", "li")
#: how a layer's ``time_mask`` silences a neuron (docs/dpap.md sec. 7.4): "hold" = threshold test off at
#: the masked step (no spike, no reset), "drop" = spike dropped after the LIF update (the neuron resets);
#: a file without the field (written before it existed) reads as "drop"
TIME_GATES = ("hold", "drop")


@dataclass(frozen=True)
class LIFNeurons:
    """Current-based LIF population (Norse ``LIFCell`` semantics, shared by the population).

    Norse equations per time step ``dt``, input current ``I_in`` (``W s`` plus the layer's
    ``input_bias`` and recurrent input, when it has them)::

        i <- i + I_in;  v <- v + dt/tau_mem * (v_leak - v + i);  i <- i - dt/tau_syn * i
        spike = v > v_th;  v[spike] = v_reset

    Three variants, for NIR's other neuron nodes, use the same fields and no other (docs/deployment.md,
    NIR section; :meth:`model` names them):

    - ``"lif"`` (NIR ``LIF``, no synaptic current): ``tau_syn_s == dt``, so ``i`` is emptied every
      step and ``v`` sees only this step's input (Lava ``du = 4095``: ``u`` keeps nothing);
    - ``"if"`` (NIR ``IF``, no leak): ``tau_syn_s == dt`` and ``tau_mem_s = inf``, where the
      membrane step is ``v <- v + i`` (the input gain ``dt/tau_mem`` becomes 1, no decay);
    - ``"li"`` (NIR ``LI``, a leaky integrator that never spikes): ``tau_syn_s == dt`` and
      ``v_th = inf``; only as the last layer, with ``NetworkIR.readout == "membrane"``.

    Attributes:
        tau_syn_s: synaptic-current time constant, s.
        tau_mem_s: membrane time constant, s (``inf``: no leak).
        v_th: threshold (Norse units; ``inf``: never spikes).
        v_leak, v_reset: leak and reset potentials (0 for Lava's LIF).
    """

    tau_syn_s: float
    tau_mem_s: float
    v_th: float
    v_leak: float = 0.0
    v_reset: float = 0.0

    def model(self, dt_s: float) -> str:
        """``"cuba_lif"``, ``"lif"``, ``"if"`` or ``"li"`` (class docstring) at time step ``dt_s`` (s)."""
        if np.isinf(self.v_th):
            return "li"
        if np.isinf(self.tau_mem_s):
            return "if"
        return "lif" if np.isclose(self.tau_syn_s, dt_s, rtol=1e-6, atol=0) else "cuba_lif"

    def step_factors(self, dt_s: float) -> tuple:
        """``(keep_i, keep_v, gain)`` of one Euler step of ``dt_s`` s: ``i <- keep_i * i`` after use,
        ``v <- keep_v * v + gain * (v_leak + i)`` (class docstring; IF: ``keep_v = gain = 1``, ``v_leak`` 0)."""
        keep_i = 1.0 - dt_s / self.tau_syn_s
        if np.isinf(self.tau_mem_s):
            return keep_i, 1.0, 1.0
        a_v = dt_s / self.tau_mem_s
        return keep_i, 1.0 - a_v, a_v


@dataclass(frozen=True)
class FixedPoint:
    """Loihi / Lava fixed-point parameters of one layer (``export/quantize.py``).

    Attributes:
        weight: integer weights ``(n_out, n_in)`` int32 that Lava's 8-bit synapse keeps
            unchanged (even values in ``[-256, 254]`` for mixed-sign weights).
        weight_exp: Lava ``weight_exp``: the summed input is shifted by it.
        du, dv: Lava 12-bit decay registers (``du`` as Lava's LIF takes it, i.e. lava-dl ``iDecay - 1``).
        vth: Lava 17-bit threshold mantissa (the neuron compares ``v > vth << 6``).
        scale: Lava weight units per Norse unit of ``dt/tau_mem * w`` (informative).
        bias_exp: Lava's 3-bit ``bias_exp`` (0..7) of a population driven by current encoding
            (the first layer of an IR with ``input_encoding == "current"``), whose per-sample
            ``bias_mant`` the host computes from the input (``export/quantize.py``,
            ``current_bias()``); None for every other layer.
        recurrent_weight: integer recurrent weights ``(n_out, n_out)`` int32 of a layer with
            ``recurrent`` (same scale and ``weight_exp`` as ``weight``: both reach the same ``u``),
            or None.
        input_bias: integer weights ``(n_bias,)`` int32 (``(n_out,)``, conv ``(C_out,)``) of the
            layer's bias axon, an input that spikes at every step, for a layer with ``input_bias``
            (same scale and ``weight_exp`` as ``weight``; ``export/quantize.py``), or None.
    """

    weight: np.ndarray
    weight_exp: int
    du: int
    dv: int
    vth: int
    scale: float
    bias_exp: Optional[int] = None
    recurrent_weight: Optional[np.ndarray] = None
    input_bias: Optional[np.ndarray] = None
    bias_mant: Optional[np.ndarray] = None


def _check_extras(layer, n_bias: int) -> None:
    """``input_bias`` ``(n_bias,)`` and (FC) ``recurrent`` ``(n_out, n_out)`` float32, finite, on LIF layers."""
    if layer.input_bias is not None:
        layer.input_bias = np.asarray(layer.input_bias, dtype=np.float32)
        if layer.input_bias.shape != (n_bias,) or not np.all(np.isfinite(layer.input_bias)):
            raise IRError(f"layer {layer.name!r}: input_bias {layer.input_bias.shape} must be ({n_bias},) finite "
                          "numbers (one per output neuron, per output channel for a convolution)")
    fixed_bias = layer.fixed.input_bias if layer.fixed is not None else None
    if fixed_bias is not None and (layer.input_bias is None or np.shape(fixed_bias) != (n_bias,)):
        raise IRError(f"layer {layer.name!r}: fixed input bias {np.shape(fixed_bias)} needs a float input_bias "
                      f"({n_bias},)")
    rec = getattr(layer, "recurrent", None)
    if rec is not None:
        layer.recurrent = np.asarray(rec, dtype=np.float32)
        if layer.recurrent.shape != (layer.n_out, layer.n_out) or not np.all(np.isfinite(layer.recurrent)):
            raise IRError(f"layer {layer.name!r}: recurrent weights {layer.recurrent.shape} must be "
                          f"({layer.n_out}, {layer.n_out}) finite numbers")
        if layer.time_mask is not None:
            raise IRError(f"layer {layer.name!r}: recurrent weights and a timestep mask together are not defined "
                          "(which spikes would feed back?)")
        fixed = layer.fixed.recurrent_weight if layer.fixed is not None else None
        if fixed is not None and np.shape(fixed) != layer.recurrent.shape:
            raise IRError(f"layer {layer.name!r}: fixed recurrent weights {np.shape(fixed)} differ from "
                          f"{layer.recurrent.shape}")
    if (layer.input_bias is not None or rec is not None) and layer.activation != "lif":
        raise IRError(f"layer {layer.name!r}: input_bias and recurrent weights need a LIF population")


@dataclass(frozen=True)
class SigmaDeltaNeurons:
    """A lava-dl sigma-delta (SDNN) population as netx builds it (``lava/lib/dl/netx/hdf5.py``,
    ``get_neuron_params``: Lava's ``SigmaDelta`` process, ``lava/proc/sdn``): the synaptic input is
    accumulated (sigma), passed through ``activation`` and sent as a graded spike when it has moved by
    more than the threshold since the last one (delta).

    Attributes:
        vth: the delta threshold mantissa (``neuron/vThMant``).
        activation: the activation's name in the file (``neuron/activation``, e.g. ``"relu"``).
        spike_exp, state_exp: fixed-point exponents netx uses (6, 6).
        message_bits: bits of a graded spike (netx default 16).
    """

    vth: int
    activation: str = "relu"
    spike_exp: int = 6
    state_exp: int = 6
    message_bits: int = 16


def _check_activation(layer) -> None:
    if layer.time_gate not in TIME_GATES:
        raise IRError(f"layer {layer.name!r}: time_gate {layer.time_gate!r} is not one of {TIME_GATES}")
    if layer.activation not in ACTIVATIONS:
        raise IRError(f"layer {layer.name!r}: activation {layer.activation!r} is not one of {ACTIVATIONS}")
    if (layer.activation == "lif") != (layer.neurons is not None):
        raise IRError(f"layer {layer.name!r}: LIF layers need neuron parameters, ANN layers ({layer.activation}) none")
    if (layer.activation == "sdnn") != (layer.sigma_delta is not None):
        raise IRError(f"layer {layer.name!r}: sigma-delta layers (and only they) need sigma_delta parameters")


def _check_bias_delay(layer, bias_shape: tuple, delay_shape: tuple) -> None:
    """Coerce and check ``layer.bias`` (float ``bias_shape``) and ``layer.delay`` (integer
    time steps >= 0, ``delay_shape``), naming the layer."""
    if layer.bias is not None:
        layer.bias = np.asarray(layer.bias, dtype=np.float32)
        if layer.bias.shape != bias_shape or not np.all(np.isfinite(layer.bias)):
            raise IRError(f"layer {layer.name!r}: bias {layer.bias.shape} must be finite of shape {bias_shape}")
    if layer.delay is not None:
        d = np.asarray(layer.delay)
        if d.shape != delay_shape or d.dtype.kind not in "iu" or (d.size and d.min() < 0):
            raise IRError(f"layer {layer.name!r}: delay {d.shape} {d.dtype} must be integer time steps >= 0 of "
                          f"shape {delay_shape}")
        layer.delay = d.astype(np.int64)
    f = layer.fixed
    if f is not None and f.bias_mant is not None and np.shape(f.bias_mant) != bias_shape:
        raise IRError(f"layer {layer.name!r}: fixed bias_mant {np.shape(f.bias_mant)} must have shape {bias_shape}")


def layer_features(layer) -> List[str]:
    """The optional features (:data:`FEATURES`) weight layer ``layer`` uses, in that order. The LIF
    variant of NIR (``tau_syn_s == dt``) is not one: it is an ordinary current-based LIF whose current
    is emptied every step (Lava ``du = 4095``, netx ``iDecay = 4096``), which every consumer of
    current-based LIF layers computes as it is."""
    used = [k for k in ("bias", "delay") if getattr(layer, k, None) is not None]
    used += [k for k in ("groups", "dilation") if getattr(layer, k, 1) != 1]
    used += [k for k in ("input_bias", "recurrent") if getattr(layer, k, None) is not None]
    n = layer.neurons
    if n is not None and np.isinf(n.v_th):
        used.append("li")
    elif n is not None and np.isinf(n.tau_mem_s):
        used.append("if")
    return used


@dataclass
class FCLayer:
    """Fully connected synapses ``(n_out, n_in)`` into ``n_out`` LIF neurons.

    Attributes:
        name: layer name (``fc1`` ...), used in every error and report line.
        weight: float weights ``(n_out, n_in)``, Norse units, zero where pruned.
        mask: surviving synapses ``(n_out, n_in)`` bool.
        neurons: LIF parameters of the population (None for ANN layers).
        activation: ``"lif"`` (SNN) or, for ANNs, ``"relu"`` / ``"identity"`` (the logits).
        pool_fold: the average-pooling factor folded into this layer's weights (1: none).
        dense_shape: ``(n_out, n_in)`` of the unpruned layer this one came from.
        fixed: fixed-point parameters, set by quantisation.
        time_mask: ``(n_out, T)`` bool from timestep pruning (False: the neuron is silent at that
            step), or None.
        time_gate: how ``time_mask`` silences: ``"hold"`` (threshold test off: no spike, no reset,
            ``v`` keeps its charge) or ``"drop"`` (spike dropped after the LIF update, the neuron
            resets; the default, and what a file without the field means).
        input_bias: ``(n_out,)`` float, a constant added to the synaptic input ``I_in`` of every
            neuron at every time step together with ``W s`` (NIR ``Affine.bias``; Norse's
            ``torch.nn.Linear`` bias in front of a cell), or None.
        recurrent: ``(n_out, n_out)`` float weights from the population's spikes at step ``t`` to its
            own input ``I_in`` at step ``t + 1`` (Norse ``LIFRecurrentCell``; a NIR population whose
            output feeds back into it through an ``Affine``/``Linear``), or None.
        bias: ``(n_out,)`` float, Norse units, or None: a constant added to each neuron's membrane
            ``v`` every time step, Lava's LIF bias (``lava/proc/lif/models.py``:
            ``v <- v*(1 - dv) + u + (bias_mant << bias_exp)``); its integers are ``fixed.bias_mant``
            with ``fixed.bias_exp`` (6 in lava-dl netx files).
        delay: ``(n_out, n_in)`` int, time steps, or None: synaptic delay beyond the one step every
            Lava ``Dense``/``Sparse`` adds (Lava's ``DelaySparse``/``DelayDense``: delay 0 arrives
            at the next step, ``lava/proc/dense/models.py``); an axonal delay (one per presynaptic
            neuron) is the same value down a column.
        sigma_delta: the sigma-delta parameters of an ``activation == "sdnn"`` layer, else None.
    """

    name: str
    weight: np.ndarray
    mask: np.ndarray
    neurons: Optional[LIFNeurons]
    dense_shape: tuple
    fixed: Optional[FixedPoint] = None
    kind: str = "fc"
    activation: str = "lif"
    pool_fold: int = 1
    time_mask: Optional[np.ndarray] = None
    time_gate: str = "drop"
    input_bias: Optional[np.ndarray] = None
    recurrent: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    delay: Optional[np.ndarray] = None
    sigma_delta: Optional[SigmaDeltaNeurons] = None

    def __post_init__(self):
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.weight.ndim != 2 or self.mask.shape != self.weight.shape:
            raise IRError(
                f"layer {self.name!r}: weight {self.weight.shape} and mask {self.mask.shape} must be the same 2-D shape"
            )
        self.dense_shape = tuple(int(s) for s in self.dense_shape)
        _check_activation(self)
        _check_extras(self, self.n_out)
        _check_bias_delay(self, (self.n_out,), self.weight.shape)

    def features(self) -> List[str]:
        """The optional features (:data:`FEATURES`) this layer uses."""
        return layer_features(self)

    def weight_mask(self) -> np.ndarray:
        """The mask broadcast to the weight's shape ``(n_out, n_in)``."""
        return self.mask

    def masked_weight(self, fixed: bool = False) -> np.ndarray:
        """Weights with pruned synapses 0: float (Norse units) or, with ``fixed``, the integers."""
        return np.where(self.weight_mask(), self.fixed.weight if fixed else self.weight, 0)

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def synapses(self) -> int:
        """Surviving synapses of the trained model: mask entries, divided by ``pool_fold**2``
        when an average pooling was folded into this layer (each synapse then appears once per
        pooled pixel)."""
        return int(self.mask.sum()) // (self.pool_fold ** 2)

    @property
    def synapses_dense(self) -> int:
        """Synapses of the unpruned layer."""
        return int(self.dense_shape[0] * self.dense_shape[1])


class _MapShaped:
    """Neurons in and out of a node that takes a ``(C, H, W)`` map: ``prod(in_shape)``, ``prod(out_shape)``."""

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))


@dataclass
class ConvLayer(_MapShaped):
    """2-D convolution synapses into a ``(C_out, H_out, W_out)`` LIF population.

    Average pooling in front of a layer is folded into its weights when the IR is made
    (``train/compact.py: cnn_to_ir``), so a conv layer here is one convolution: correlation
    (as ``torch.nn.functional.conv2d``), zero padding, equal stride and dilation in both directions,
    ``groups`` channel groups (torch's ``groups``: output channel ``o`` sees input channels
    ``g*C_in/groups .. (g+1)*C_in/groups - 1`` of its group ``g = o // (C_out/groups)``).

    Attributes:
        weight: float kernel ``(C_out, C_in/groups, kH, kW)``, Norse units.
        mask: surviving channel-to-channel connections ``(C_out, C_in/groups)`` (DPAP's conv granularity).
        in_shape: ``(C_in, H, W)`` of the input.
        stride, padding: of the convolution, pixels.
        dense_shape: ``(C_out, C_in)`` of the unpruned layer.
        fixed: fixed-point parameters (``weight_exp`` is 0: Lava's fixed-point ``Conv`` has none).
        pool_fold: the pooling factor folded into this layer (1: none).
        time_mask: ``(C_out, T)`` bool from timestep pruning (per channel), or None.
        time_gate: ``"hold"`` or ``"drop"``, as for :class:`FCLayer`.
        input_bias: ``(C_out,)`` float, a constant added to the synaptic input of every neuron of
            each output channel at every step (NIR ``Conv2d.bias``), or None.
        groups, dilation: torch's ``groups`` and ``dilation`` (1: a plain convolution).
        bias: ``(C_out,)`` float, Norse units, one per output channel (every pixel of the channel), or
            None; as :class:`FCLayer`'s (integers in ``fixed.bias_mant``).
        delay: ``(C_out, H_out, W_out)`` int time steps per output neuron (lava-dl writes a conv
            block's axonal delay per neuron), or None. Lava 0.10 has no delayed ``Conv`` and lava-dl
            netx ignores a conv layer's delay, so the simulators refuse a layer that has one.
        sigma_delta: as for :class:`FCLayer`.

    ``n_in``/``n_out`` count neurons (``C*H*W``); ``synapses`` counts surviving kernel weights,
    ``synapses_dense`` those of the unpruned kernel (the mapper unrolls the convolution itself).
    """

    name: str
    weight: np.ndarray
    mask: np.ndarray
    neurons: Optional[LIFNeurons]
    in_shape: tuple
    dense_shape: tuple
    stride: int = 1
    padding: int = 0
    fixed: Optional[FixedPoint] = None
    kind: str = "conv"
    activation: str = "lif"
    pool_fold: int = 1
    time_mask: Optional[np.ndarray] = None
    time_gate: str = "drop"
    input_bias: Optional[np.ndarray] = None
    groups: int = 1
    dilation: int = 1
    bias: Optional[np.ndarray] = None
    delay: Optional[np.ndarray] = None
    sigma_delta: Optional[SigmaDeltaNeurons] = None

    def __post_init__(self):
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.in_shape = tuple(int(x) for x in self.in_shape)
        self.dense_shape = tuple(int(x) for x in self.dense_shape)
        self.groups, self.dilation = int(self.groups), int(self.dilation)
        if self.weight.ndim != 4 or self.mask.shape != self.weight.shape[:2]:
            raise IRError(f"layer {self.name!r}: conv weight {self.weight.shape} needs 4 dims and mask (C_out, C_in), "
                          f"got mask {self.mask.shape}")
        if self.groups < 1 or self.dilation < 1 or self.weight.shape[0] % self.groups or self.in_shape[0] % self.groups:
            raise IRError(f"layer {self.name!r}: groups {self.groups} must divide {self.weight.shape[0]} output and "
                          f"{self.in_shape[0]} input channels, dilation {self.dilation} must be >= 1")
        if self.weight.shape[1] * self.groups != self.in_shape[0]:
            raise IRError(f"layer {self.name!r}: kernel takes {self.weight.shape[1]} channels x {self.groups} groups, "
                          f"input has {self.in_shape[0]}")
        _check_activation(self)
        if min(self.out_shape) < 1:
            raise IRError(f"layer {self.name!r}: input {self.in_shape} too small for the kernel")
        _check_extras(self, self.out_shape[0])
        _check_bias_delay(self, (self.weight.shape[0],), self.out_shape)

    def features(self) -> List[str]:
        """The optional features (:data:`FEATURES`) this layer uses."""
        return layer_features(self)

    @property
    def kernel(self) -> tuple:
        return tuple(int(k) for k in self.weight.shape[2:])

    @property
    def out_shape(self) -> tuple:
        """``(C_out, H_out, W_out)``: ``(H + 2 padding - dilation (kH - 1) - 1) // stride + 1`` (torch's
        ``Conv2d`` formula), the same for ``W``."""
        _, h, w = self.in_shape
        kh, kw = self.kernel
        d = self.dilation
        return (int(self.weight.shape[0]), (h + 2 * self.padding - d * (kh - 1) - 1) // self.stride + 1,
                (w + 2 * self.padding - d * (kw - 1) - 1) // self.stride + 1)

    def weight_mask(self) -> np.ndarray:
        """The channel mask broadcast over the kernel ``(C_out, C_in, kH, kW)``."""
        return np.broadcast_to(self.mask[:, :, None, None], self.weight.shape)

    def masked_weight(self, fixed: bool = False) -> np.ndarray:
        """Kernel with pruned connections 0: float (Norse units) or, with ``fixed``, the integers."""
        return np.where(self.weight_mask(), self.fixed.weight if fixed else self.weight, 0)

    def unrolled(self, fixed: bool = False) -> sp.csr_matrix:
        """The convolution as a sparse matrix ``(C_out*H_out*W_out, C_in*H*W)`` of its surviving
        weights (float, or with ``fixed`` the integers), neurons in torch's ``(C, H, W)`` order:
        ``unrolled() @ x.reshape(-1)`` equals ``conv2d(x, masked_weight()).reshape(-1)``.

        Building it costs about 0.4 s for a 2C2F's conv2 (1.9 M entries) and a run asks several
        times (mapper, energy, emulator): the last few are kept, keyed by the kernel's contents and
        the geometry (an in-place change of the weights gives a new key); each call returns a copy."""
        w = self.masked_weight(fixed=fixed)
        key = (hashlib.sha1(np.ascontiguousarray(w).tobytes()).hexdigest(), str(w.dtype), w.shape,
               tuple(self.in_shape), self.stride, self.padding, self.groups, self.dilation)
        if key not in _UNROLLED:
            if len(_UNROLLED) >= 8:
                _UNROLLED.pop(next(iter(_UNROLLED)))
            _UNROLLED[key] = self._unroll(w)
        return _UNROLLED[key].copy()

    def _unroll(self, w: np.ndarray) -> sp.csr_matrix:
        c_in, h, wd = self.in_shape
        c_out, ho, wo = self.out_shape
        oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
        rows, cols, vals = [], [], []
        per_out, per_in = c_out // self.groups, c_in // self.groups
        for a, b in np.ndindex(*self.kernel):  # one tap at a time, vectorised over (o, i) and positions
            o, k = np.nonzero(w[:, :, a, b])
            i = (o // per_out) * per_in + k  # the input channel of group-local channel k
            iy = oy * self.stride - self.padding + a * self.dilation
            ix = ox * self.stride - self.padding + b * self.dilation
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
            if o.size == 0 or not ok.any():
                continue
            rows.append(((o * ho * wo)[:, None] + (oy * wo + ox)[ok][None, :]).ravel())
            cols.append(((i * h * wd)[:, None] + (iy * wd + ix)[ok][None, :]).ravel())
            vals.append(np.repeat(w[o, k, a, b], int(ok.sum())))
        cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
        return sp.csr_matrix((cat(vals, w.dtype), (cat(rows, np.int64), cat(cols, np.int64))),
                             shape=(c_out * ho * wo, c_in * h * wd))

    @property
    def synapses(self) -> int:
        """Surviving kernel weights of the trained model (a folded pooling repeats each ``pool_fold**2`` times)."""
        return int(np.count_nonzero(self.masked_weight())) // (self.pool_fold ** 2)

    @property
    def synapses_dense(self) -> int:
        kh, kw = (k // self.pool_fold for k in self.kernel)
        return int(self.dense_shape[0] * self.dense_shape[1] * kh * kw)


@dataclass
class Flatten(_MapShaped):
    """A ``(C, H, W)`` map flattened to ``C*H*W`` neurons in torch's ``C, H, W`` order (no
    synapses, no neurons: a layout node). Lava realises it as an ``OutPort`` reshape, netx as a
    ``flatten`` layer, NIR as ``Flatten``, ONNX as ``Flatten``.

    Attributes:
        name: node name (``fc1_flatten``: named after the layer it feeds).
        in_shape: ``(C, H, W)``.
    """

    name: str
    in_shape: tuple
    kind: str = "flatten"

    def __post_init__(self):
        self.in_shape = tuple(int(x) for x in self.in_shape)
        if len(self.in_shape) != 3:
            raise IRError(f"node {self.name!r}: flatten takes a (C, H, W) map, got {self.in_shape}")

    @property
    def out_shape(self) -> tuple:
        return (int(np.prod(self.in_shape)),)


@dataclass
class AvgPool(_MapShaped):
    """Average pooling by ``pool`` (kernel = stride = ``pool``, no padding) of a ``(C, H, W)`` map,
    kept as a node only where it could not be folded into the next layer's weights
    (``train/compact.py``): targets with a pooling of their own (NIR, ONNX) export it, the others
    refuse it naming the node.

    Attributes:
        name: node name.
        in_shape: ``(C, H, W)``.
        pool: pooling factor, pixels.
    """

    name: str
    in_shape: tuple
    pool: int
    kind: str = "avgpool"

    def __post_init__(self):
        self.in_shape = tuple(int(x) for x in self.in_shape)
        if len(self.in_shape) != 3 or self.pool < 1 or min(self.in_shape[1:]) < self.pool:
            raise IRError(f"node {self.name!r}: pooling by {self.pool} needs a (C, H, W) map of at least that size, "
                          f"got {self.in_shape}")

    @property
    def out_shape(self) -> tuple:
        c, h, w = self.in_shape
        return (c, h // self.pool, w // self.pool)


Layer = Union[FCLayer, ConvLayer]
Node = Union[FCLayer, ConvLayer, Flatten, AvgPool]
WEIGHT_NODE_KINDS = ("fc", "conv")
SHAPE_NODE_KINDS = ("flatten", "avgpool")


def _out_shape(node) -> tuple:
    return tuple(node.out_shape) if node.kind != "fc" else (node.n_out,)


@dataclass
class NetworkIR:
    """A chain network, input first (feed-forward, except that a fully connected layer may have
    recurrent weights onto itself).

    Attributes:
        name: model name.
        input_size: input features ``F`` per time step (``C*H*W`` for frames).
        time_steps: ``T`` per sample.
        dt_s: time step, s.
        nodes: the chain of weight layers and shape nodes; a list of weight layers alone is
            accepted when no layout node is needed (an MLP). The last node is the output layer
            (one neuron per class).
        readout: ``"spike_count"``: class = argmax of output spike counts (first on ties);
            ``"logits"`` for ANNs (``time_steps = 1``, layers with ``activation`` relu / identity);
            ``"membrane"``: the last layer is a leaky integrator (``LIFNeurons`` variant ``"li"``) whose
            membrane potential at the last step is the score.
        metadata: free-form facts (training, data set) kept with the network.
        input_shape: ``(C, H, W)`` of one input frame, or None for flat input ``(F,)``.
        input_encoding: ``"spikes"`` (0/1 input through the first layer's synapses) or
            ``"current"``: the first weight layer (fully connected) receives the analog sample
            at every step and its neurons integrate ``W x`` straight into the membrane, which
            Lava realises as the population's bias (``docs/data.md``, current encoding).

    Raises:
        IRError: an empty chain, sizes that do not chain, an FC layer fed a ``(C, H, W)`` map
            without a :class:`Flatten`, or a shape node at the end.
    """

    name: str
    input_size: int
    time_steps: int
    dt_s: float
    nodes: List[Node]
    readout: str = "spike_count"
    metadata: dict = field(default_factory=dict)
    input_shape: Optional[tuple] = None
    input_encoding: str = "spikes"

    def __post_init__(self):
        self.nodes = list(self.nodes)
        if not self.layers:
            raise IRError("a network needs at least one layer")
        if self.input_shape is not None:
            self.input_shape = tuple(int(x) for x in self.input_shape)
            if int(np.prod(self.input_shape)) != self.input_size:
                raise IRError(f"input shape {self.input_shape} does not hold {self.input_size} features")
        if self.input_encoding not in INPUT_ENCODINGS:
            raise IRError(f"input encoding {self.input_encoding!r} is not one of {INPUT_ENCODINGS}")
        self._check_readout()
        if self.input_encoding == "current" and self.nodes[0].kind != "fc":
            raise IRError(f"current encoding drives a fully connected first layer; {self.nodes[0].name!r} is "
                          f"{self.nodes[0].kind}")
        shape = self.input_shape or (self.input_size,)
        for node in self.nodes:
            if node.kind == "fc" and len(shape) != 1:
                raise IRError(f"layer {node.name!r} is fully connected but receives a {shape} map; a flatten node "
                              "must come first")
            if node.kind in ("conv", "flatten", "avgpool") and tuple(node.in_shape) != tuple(shape):
                raise IRError(f"node {node.name!r} takes {tuple(node.in_shape)} but receives {tuple(shape)}")
            if node.n_in != int(np.prod(shape)):
                raise IRError(f"layer {node.name!r} takes {node.n_in} inputs but receives {int(np.prod(shape))}")
            shape = _out_shape(node)
        if self.nodes[-1].kind not in WEIGHT_NODE_KINDS:
            raise IRError(f"the network ends with {self.nodes[-1].kind} node {self.nodes[-1].name!r}; the last node "
                          "must be the output layer")

    def _check_readout(self) -> None:
        """Leaky integrators (never spiking) only as the last layer, and then with the membrane readout."""
        if self.readout not in READOUTS:
            raise IRError(f"readout {self.readout!r} is not one of {READOUTS}")
        li = [l.name for l in self.layers if l.neurons is not None and l.neurons.model(self.dt_s) == "li"]
        last = self.layers[-1].name
        if [n for n in li if n != last]:
            raise IRError(f"layer(s) {', '.join(n for n in li if n != last)} never spike (leaky integrators) but feed "
                          "another layer; a leaky integrator can only be the last layer (membrane readout)")
        if (last in li) != (self.readout == "membrane"):
            raise IRError(f"readout {self.readout!r} and last layer {last!r} ("
                          f"{'a leaky integrator' if last in li else 'spiking'}) disagree: the membrane readout "
                          "goes with a leaky-integrator last layer")

    @property
    def layers(self) -> List[Layer]:
        """The weight layers (:class:`FCLayer`, :class:`ConvLayer`) in order, without shape nodes."""
        return [n for n in self.nodes if n.kind in WEIGHT_NODE_KINDS]

    def node_before(self, layer) -> Optional[Node]:
        """The node right before weight layer ``layer`` (a flatten, a pooling, a weight layer), or None."""
        i = next(k for k, n in enumerate(self.nodes) if n is layer)
        return self.nodes[i - 1] if i else None

    @property
    def n_classes(self) -> int:
        return self.layers[-1].n_out

    @property
    def neurons(self) -> int:
        return sum(l.n_out for l in self.layers)

    @property
    def synapses(self) -> int:
        return sum(l.synapses for l in self.layers)

    @property
    def synapses_dense(self) -> int:
        return sum(l.synapses_dense for l in self.layers)

    @property
    def spiking(self) -> bool:
        """True when every layer is a LIF population (an SNN); False for ANNs."""
        return all(l.activation == "lif" for l in self.layers)

    @property
    def quantized(self) -> bool:
        return all(l.fixed is not None for l in self.layers)

    def silenced_inside_window(self) -> List[str]:
        """Layers whose timestep mask silences some neuron at some step inside ``time_steps``
        (what Loihi's LIF cannot do), each as ``"name: k of n (neuron, step) pairs"``."""
        out = []
        for l in self.layers:
            if l.time_mask is None:
                continue
            m = np.asarray(l.time_mask)[:, : self.time_steps]
            if not m.all():
                out.append(f"{l.name}: {int((~m).sum())} of {m.size} (unit, time step) pairs")
        return out

    def require_nodes(self, kinds, who: str) -> None:
        """Raise :class:`~dpap_deploy.errors.UnsupportedLayerError` naming every node whose kind is not
        in ``kinds`` (``who``: the consumer, for the message, e.g. ``"the mapper"``)."""
        from dpap_deploy.errors import UnsupportedLayerError

        bad = [f"{n.name} ({n.kind})" for n in self.nodes if n.kind not in kinds]
        if bad:
            raise UnsupportedLayerError(f"{who} takes {', '.join(kinds)} nodes; unsupported: {', '.join(bad)}")

    def require_features(self, allowed, who: str) -> None:
        """Raise :class:`~dpap_deploy.errors.UnsupportedLayerError` naming every weight layer that uses an
        optional feature (:data:`FEATURES`: ``bias``, ``delay``, conv ``groups``/``dilation``,
        ``input_bias``, ``recurrent``, neuron variants ``if``/``li``) not in ``allowed`` (``who``: the
        consumer, for the message)."""
        from dpap_deploy.errors import UnsupportedLayerError

        bad = [f"{l.name} ({', '.join(f for f in l.features() if f not in allowed)})" for l in self.layers
               if any(f not in allowed for f in l.features())]
        if bad:
            takes = ", ".join(allowed) if allowed else f"none of {', '.join(FEATURES)}"
            raise UnsupportedLayerError(f"{who} takes {takes}; unsupported: {', '.join(bad)} (if: integrate-and-"
                                        "fire, no leak; li: leaky integrator, no spikes)")

    def with_layers(self, layers: List[Layer]) -> "NetworkIR":
        """The same network with its weight layers replaced, in order (shape nodes kept)."""
        it = iter(layers)
        nodes = [next(it) if n.kind in WEIGHT_NODE_KINDS else n for n in self.nodes]
        return replace(self, nodes=nodes)

    # -- files ---------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the IR to one ``.npz`` (arrays + a JSON header), atomically."""
        arrays = {}
        header = {"format": IR_FORMAT, "name": self.name, "input_size": self.input_size,
                  "time_steps": self.time_steps, "dt_s": self.dt_s, "readout": self.readout,
                  "metadata": self.metadata, "nodes": [],
                  "input_shape": list(self.input_shape) if self.input_shape else None,
                  "input_encoding": self.input_encoding}
        for i, l in enumerate(self.nodes):
            if l.kind in SHAPE_NODE_KINDS:
                header["nodes"].append({"name": l.name, "kind": l.kind, "in_shape": list(l.in_shape),
                                        **({"pool": l.pool} if l.kind == "avgpool" else {})})
                continue
            arrays[f"l{i}_weight"] = l.weight
            arrays[f"l{i}_mask"] = l.mask
            entry = {"name": l.name, "kind": l.kind, "neurons": asdict(l.neurons) if l.neurons else None,
                     "activation": l.activation, "dense_shape": list(l.dense_shape), "fixed": None,
                     "pool_fold": l.pool_fold, "time_gate": l.time_gate}
            if l.kind == "conv":
                entry["conv"] = {"in_shape": list(l.in_shape), "stride": l.stride, "padding": l.padding,
                                 "groups": l.groups, "dilation": l.dilation}
            if l.sigma_delta is not None:
                entry["sigma_delta"] = asdict(l.sigma_delta)
            for key in ("time_mask", "bias", "delay", "input_bias", "recurrent"):
                if getattr(l, key, None) is not None:
                    arrays[f"l{i}_{key}"] = np.asarray(getattr(l, key))
            if l.fixed is not None:
                arrays[f"l{i}_fixed_weight"] = l.fixed.weight
                if l.fixed.recurrent_weight is not None:
                    arrays[f"l{i}_fixed_recurrent"] = l.fixed.recurrent_weight
                if l.fixed.input_bias is not None:
                    arrays[f"l{i}_fixed_input_bias"] = l.fixed.input_bias
                if l.fixed.bias_mant is not None:
                    arrays[f"l{i}_fixed_bias_mant"] = np.asarray(l.fixed.bias_mant, dtype=np.int64)
                entry["fixed"] = {k: v for k, v in asdict(l.fixed).items()
                                  if k not in ("weight", "recurrent_weight", "input_bias", "bias_mant")}
            header["nodes"].append(entry)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)

    @classmethod
    def load(cls, path: str) -> "NetworkIR":
        """Read an IR written by :meth:`save` (this version's format ``dpap-deploy-ir/4``; ``/3``,
        which has none of the fields of /4 (bias, delay, groups, dilation, sigma-delta layers, input
        biases, recurrent weights, neuron variants, membrane readout); ``/2``, whose timestep masks read
        as ``time_gate = "drop"``; or ``/1``, whose flatten between
        a conv and an FC layer was implied).

        Raises:
            IRError: the file is missing, truncated or not a dpap-deploy IR.
        """
        try:
            with np.load(path, allow_pickle=False) as f:
                header = json.loads(bytes(f["header"]).decode())
                if header.get("format") not in IR_FORMATS_READ:
                    raise IRError(f"{path!r} is not a dpap-deploy network (format {header.get('format')!r})")
                nodes = [_load_node(f, i, e) for i, e in enumerate(header.get("nodes") or header["layers"])]
                if header["format"] == "dpap-deploy-ir/1":
                    nodes = _implied_flattens(nodes)
                return cls(name=header["name"], input_size=header["input_size"], time_steps=header["time_steps"],
                           dt_s=header["dt_s"], nodes=nodes, readout=header["readout"], metadata=header["metadata"],
                           input_shape=tuple(header["input_shape"]) if header.get("input_shape") else None,
                           input_encoding=header.get("input_encoding", "spikes"))
        except IRError:
            raise
        except FileNotFoundError:
            raise IRError(f"network file {path!r} does not exist") from None
        except Exception as exc:
            raise IRError(f"network file {path!r} is unreadable or not ours ({type(exc).__name__}: {exc})") from None


def _load_node(f, i: int, e: dict) -> Node:
    if e["kind"] == "flatten":
        return Flatten(e["name"], tuple(e["in_shape"]))
    if e["kind"] == "avgpool":
        return AvgPool(e["name"], tuple(e["in_shape"]), int(e["pool"]))
    fixed = None
    array = lambda key: f[f"l{i}_{key}"] if f"l{i}_{key}" in f.files else None  # noqa: E731 (absent: None)
    if e["fixed"] is not None:
        rec, ib = (array(f"fixed_{k}") for k in ("recurrent", "input_bias"))
        fixed = FixedPoint(weight=f[f"l{i}_fixed_weight"].astype(np.int32), bias_mant=array("fixed_bias_mant"),
                           recurrent_weight=rec.astype(np.int32) if rec is not None else None,
                           input_bias=ib.astype(np.int32) if ib is not None else None, **e["fixed"])
    common = dict(name=e["name"], weight=f[f"l{i}_weight"], mask=f[f"l{i}_mask"],
                  neurons=LIFNeurons(**e["neurons"]) if e["neurons"] else None,
                  dense_shape=tuple(e["dense_shape"]), fixed=fixed,
                  activation=e.get("activation", "lif"), pool_fold=e.get("pool_fold", 1),
                  time_mask=array("time_mask"), bias=array("bias"), delay=array("delay"),
                  sigma_delta=SigmaDeltaNeurons(**e["sigma_delta"]) if e.get("sigma_delta") else None,
                  time_gate=e.get("time_gate", "drop"),  # files from before the field: the old "drop" gate
                  input_bias=array("input_bias"))
    if e["kind"] == "conv":
        return ConvLayer(**common, **e["conv"])
    if e["kind"] != "fc":
        raise IRError(f"node {e['name']!r} has unknown kind {e['kind']!r}")
    return FCLayer(**common, recurrent=array("recurrent"))


def _implied_flattens(layers: List[Layer]) -> List[Node]:
    """Format /1 chains: an FC layer right after a conv layer flattened its input."""
    out: List[Node] = []
    for l in layers:
        if l.kind == "fc" and out and out[-1].kind == "conv":
            out.append(Flatten(f"{l.name}_flatten", out[-1].out_shape))
        out.append(l)
    return out
