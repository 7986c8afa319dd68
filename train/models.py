"""Networks that DPAP prunes: Norse SNNs (MLP, CNN) and plain PyTorch ANNs (MLP, CNN).

Every model is a :class:`MaskedNet`: a chain of weight layers (``torch.nn.Linear`` or
``torch.nn.Conv2d``, no bias, so a neuron or channel that lost its dendrite is silent),
each with a boolean mask of the weight's shape. The forward pass uses ``weight * mask``,
so a pruned synapse is exactly zero. ``forward`` returns the class scores and, per weight
layer, ``(pre, post)``: the layer's input and its neurons' output, time first
``(T, B, ...)`` (ANNs: ``T = 1``), which is what DPAP's scores read.

SNNs use current-based LIF neurons (``norse.torch.LIFCell``); the output population
spikes as well and the class score is its spike count over ``T`` (the readout Lava
uses). Input: ``(T, B, F)`` for the MLP, ``(T, B, C, H, W)`` for the CNN (as in Norse).
Neuron parameters are kept here in SI units and saved by ``config()``, because Norse
does not register them in ``state_dict()`` (``shared/specs/deployment.md`` sec. 4b).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

Record = Tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LIFConfig:
    """Current-based LIF parameters shared by every population (Norse ``LIFParameters``).

    Attributes:
        tau_syn_inv: inverse synaptic time constant, 1/s (Norse default 200).
        tau_mem_inv: inverse membrane time constant, 1/s (Norse default 100).
        v_th: threshold (dimensionless, Norse units).
        dt: simulation time step, s.
        surrogate: Norse surrogate-gradient method. Norse 1.1.0's ``"super"``
            (SuperSpike) ignores ``alpha``; its gradient is ``1 / (|v - v_th| + 1)^2``.
    """

    tau_syn_inv: float = 200.0
    tau_mem_inv: float = 100.0
    v_th: float = 1.0
    dt: float = 1e-3
    surrogate: str = "super"


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer as DPAP and compaction see it.

    Attributes:
        name: ``conv1``, ``fc1`` ...
        kind: ``"fc"`` or ``"conv"``.
        n_out: neurons (fc) or output channels (conv).
        n_in: input units: features, or channels (conv, and an fc layer after a flatten).
        in_block: input features per input unit: ``H*W`` for the fc layer after a flatten, else 1.
    """

    name: str
    kind: str
    n_out: int
    n_in: int
    in_block: int = 1


class MaskedNet(nn.Module):
    """Base of every prunable model: ``self.layers`` (weight layers) and their masks."""

    spiking: bool = True

    def _init_masks(self, init_gain: float = 1.0) -> None:
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.mul_(init_gain)
        for i, layer in enumerate(self.layers):
            self.register_buffer(f"mask{i}", torch.ones_like(layer.weight, dtype=torch.bool))

    @property
    def masks(self) -> List[torch.Tensor]:
        return [getattr(self, f"mask{i}") for i in range(len(self.layers))]

    def masked_weights(self) -> List[torch.Tensor]:
        return [layer.weight * m for layer, m in zip(self.layers, self.masks)]

    def specs(self) -> List[LayerSpec]:
        raise NotImplementedError

    def layer_names(self) -> List[str]:
        return [s.name for s in self.specs()]

    def widths(self) -> List[int]:
        """Output units per weight layer (neurons or channels)."""
        return [s.n_out for s in self.specs()]

    def resized(self, widths: Sequence[int]) -> "MaskedNet":
        """A new model of the same kind and hyper-parameters with ``widths`` output units per layer."""
        raise NotImplementedError

    # -- timestep masks (spatio-temporal DPAP, spec sec. 4b) -----------------------------
    def time_mask(self, l: int) -> Optional[torch.Tensor]:
        """Layer ``l``'s timestep mask ``(units, T)`` bool (False: unit silent at that step), or None."""
        return getattr(self, f"tmask{l}", None)

    @torch.no_grad()
    def set_time_mask(self, l: int, mask: torch.Tensor) -> None:
        """Silence unit ``i`` (neuron; conv: channel) of layer ``l`` at step ``t`` where ``mask[i, t]``
        is False: its spike is dropped after the LIF update (the neuron still resets), so nothing
        downstream hears it. A buffer, so it is saved with the model."""
        mask = mask.to(torch.bool)
        if mask.dim() != 2 or mask.shape[0] != self.widths()[l]:
            raise ValueError(f"layer {self.layer_names()[l]}: time mask must be ({self.widths()[l]}, T), "
                             f"got {tuple(mask.shape)}")
        if self.time_mask(l) is None or self.time_mask(l).shape != mask.shape:
            self.register_buffer(f"tmask{l}", mask.clone())
        else:
            self.time_mask(l).copy_(mask)

    def active_steps(self, time_steps: int) -> int:
        """Time steps the network still needs: the window shortened by the steps pruned for
        *every* unit of every timestep-pruned layer at its end (``time_steps`` when none)."""
        last = -1
        masks = [self.time_mask(l) for l in range(len(self.layers))]
        masks = [m for m in masks if m is not None]
        if not masks:
            return int(time_steps)
        for m in masks:
            cols = torch.nonzero(m[:, :time_steps].any(0)).flatten()
            last = max(last, int(cols[-1]) if len(cols) else -1)
        return max(1, last + 1)

    def _gate(self, l: int, z: torch.Tensor, t: int) -> torch.Tensor:
        m = self.time_mask(l)
        if m is None:
            return z
        g = m[:, t].to(z.dtype)
        return z * (g.view(1, -1, 1, 1) if z.dim() == 4 else g)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` that first creates the timestep-mask buffers it finds."""
        for key, value in state_dict.items():
            if key.startswith("tmask") and self.time_mask(int(key[5:])) is None:
                self.register_buffer(key, torch.zeros_like(value, dtype=torch.bool))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned weight in place (called after each optimizer step)."""
        for layer, m in zip(self.layers, self.masks):
            layer.weight.mul_(m)

    def unit_connectivity(self, l: int) -> np.ndarray:
        """``(n_out, n_in units)`` bool: output unit ``i`` has a surviving synapse from input unit ``j``."""
        m = self.masks[l].cpu().numpy()
        spec = self.specs()[l]
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


def _lif_cells(lif: LIFConfig, n: int) -> nn.ModuleList:
    import norse.torch as norse

    p = norse.LIFParameters(tau_syn_inv=torch.as_tensor(lif.tau_syn_inv), tau_mem_inv=torch.as_tensor(lif.tau_mem_inv),
                            v_th=torch.as_tensor(lif.v_th), method=lif.surrogate)
    return nn.ModuleList(norse.LIFCell(p=p, dt=lif.dt) for _ in range(n))


class SpikingMLP(MaskedNet):
    """Feed-forward LIF network, e.g. 64-256-128-10.

    Args:
        sizes: ``(F, N_1, ..., N_L)`` neurons per population, input first.
        lif: neuron parameters, shared by all populations.
        init_gain: multiplies PyTorch's default ``Linear`` initialisation so that a random
            network spikes from the first batch.
    """

    def __init__(self, sizes: Sequence[int], lif: LIFConfig = LIFConfig(), init_gain: float = 2.0):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes must name an input and at least one layer, got {tuple(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.lif = lif
        self.init_gain = float(init_gain)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self._init_masks(init_gain)
        self.cells = _lif_cells(lif, len(self.layers))

    @property
    def fcs(self) -> nn.ModuleList:
        return self.layers

    def specs(self) -> List[LayerSpec]:
        return [LayerSpec(f"fc{i + 1}", "fc", b, a) for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))]

    def config(self) -> dict:
        return {"kind": "snn-mlp", "sizes": list(self.sizes), "lif": asdict(self.lif), "init_gain": self.init_gain}

    @classmethod
    def from_config(cls, cfg: dict) -> "SpikingMLP":
        return cls(cfg["sizes"], LIFConfig(**cfg["lif"]), cfg.get("init_gain", 1.0))

    def resized(self, widths: Sequence[int]) -> "SpikingMLP":
        return SpikingMLP([self.sizes[0], *widths], self.lif, self.init_gain)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Record]]:
        """Run ``T`` time steps.

        Args:
            x: input spikes ``(T, B, F)``.

        Returns:
            ``(counts, records)``: output spike counts ``(B, N_L)`` and per layer
            ``(input spikes (T, B, N_{l-1}), output spikes (T, B, N_l))``.
        """
        if x.dim() != 3 or x.shape[-1] != self.sizes[0]:
            raise ValueError(f"input must be (T, B, {self.sizes[0]}), got {tuple(x.shape)}")
        weights = self.masked_weights()
        states = [None] * len(self.layers)
        out: List[List[torch.Tensor]] = [[] for _ in self.layers]
        x = x[: self.active_steps(x.shape[0])]  # a window shortened by timestep pruning
        for t in range(x.shape[0]):
            z = x[t]
            for i, (w, cell) in enumerate(zip(weights, self.cells)):
                z, states[i] = cell(torch.nn.functional.linear(z, w), states[i])
                z = self._gate(i, z, t)
                out[i].append(z)
        spikes = [torch.stack(r) for r in out]
        records = list(zip([x] + spikes[:-1], spikes))
        return spikes[-1].sum(0), records


class SpikingCNN(MaskedNet):
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
    """

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int], n_classes: int,
                 kernel: int = 3, pool: int = 2, lif: LIFConfig = LIFConfig(), init_gain: float = 8.0):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.channels, self.hidden = tuple(int(c) for c in channels), tuple(int(h) for h in hidden)
        self.n_classes, self.kernel, self.pool = int(n_classes), int(kernel), int(pool)
        self.lif, self.init_gain = lif, float(init_gain)
        c_in, h, w = self.in_shape
        convs = []
        for c in self.channels:
            convs.append(nn.Conv2d(c_in, c, self.kernel, padding=self.kernel // 2, bias=False))
            c_in, h, w = c, h // self.pool, w // self.pool
        if h < 1 or w < 1:
            raise ValueError(f"input {self.in_shape} is too small for {len(self.channels)} pooling stages of {pool}")
        self.flat_hw = h * w
        fcs, f = [], c_in * h * w
        for n in (*self.hidden, self.n_classes):
            fcs.append(nn.Linear(f, n, bias=False))
            f = n
        self.n_conv = len(convs)
        self.layers = nn.ModuleList(convs + fcs)
        self._init_masks(init_gain)
        self.cells = _lif_cells(lif, len(self.layers))
        self.avgpool = nn.AvgPool2d(self.pool)

    def specs(self) -> List[LayerSpec]:
        out, c_in = [], self.in_shape[0]
        for i, c in enumerate(self.channels):
            out.append(LayerSpec(f"conv{i + 1}", "conv", c, c_in))
            c_in = c
        n_in, block = c_in, self.flat_hw
        for i, n in enumerate((*self.hidden, self.n_classes)):
            out.append(LayerSpec(f"fc{i + 1}", "fc", n, n_in, block))
            n_in, block = n, 1
        return out

    def config(self) -> dict:
        return {"kind": "snn-cnn", "in_shape": list(self.in_shape), "channels": list(self.channels),
                "hidden": list(self.hidden), "n_classes": self.n_classes, "kernel": self.kernel, "pool": self.pool,
                "lif": asdict(self.lif), "init_gain": self.init_gain}

    @classmethod
    def from_config(cls, cfg: dict) -> "SpikingCNN":
        return cls(cfg["in_shape"], cfg["channels"], cfg["hidden"], cfg["n_classes"], cfg["kernel"], cfg["pool"],
                   LIFConfig(**cfg["lif"]), cfg.get("init_gain", 1.0))

    def resized(self, widths: Sequence[int]) -> "SpikingCNN":
        k = self.n_conv
        return SpikingCNN(self.in_shape, widths[:k], widths[k:-1], widths[-1], self.kernel, self.pool, self.lif,
                          self.init_gain)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Record]]:
        """Args: ``x`` ``(T, B, C, H, W)``. Returns ``(counts (B, n_classes), records)``."""
        if x.dim() != 5 or tuple(x.shape[2:]) != self.in_shape:
            raise ValueError(f"input must be (T, B, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        weights = self.masked_weights()
        states: List[Optional[object]] = [None] * len(self.layers)
        pre: List[List[torch.Tensor]] = [[] for _ in self.layers]
        post: List[List[torch.Tensor]] = [[] for _ in self.layers]
        x = x[: self.active_steps(x.shape[0])]  # a window shortened by timestep pruning
        for t in range(x.shape[0]):
            z = x[t]
            for i, (layer, w, cell) in enumerate(zip(self.layers, weights, self.cells)):
                if i == self.n_conv:
                    z = z.flatten(1)
                pre[i].append(z)
                if i < self.n_conv:
                    cur = torch.nn.functional.conv2d(z, w, padding=self.kernel // 2)
                else:
                    cur = torch.nn.functional.linear(z, w)
                z, states[i] = cell(cur, states[i])
                z = self._gate(i, z, t)
                post[i].append(z)
                if i < self.n_conv:
                    z = self.avgpool(z)
        records = [(torch.stack(a), torch.stack(b)) for a, b in zip(pre, post)]
        return records[-1][1].sum(0), records


class ANNMLP(MaskedNet):
    """Plain PyTorch MLP with ReLU (DPAP's ANN variant, paper eqs. 12-13), logits out.

    Input ``(B, F)``; records are ``(T=1, B, N)`` ReLU activations (the output layer: logits).
    """

    spiking = False

    def __init__(self, sizes: Sequence[int], init_gain: float = 1.0):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        self.init_gain = float(init_gain)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        self._init_masks(init_gain)

    def specs(self) -> List[LayerSpec]:
        return [LayerSpec(f"fc{i + 1}", "fc", b, a) for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))]

    def config(self) -> dict:
        return {"kind": "ann-mlp", "sizes": list(self.sizes), "init_gain": self.init_gain}

    @classmethod
    def from_config(cls, cfg: dict) -> "ANNMLP":
        return cls(cfg["sizes"], cfg.get("init_gain", 1.0))

    def resized(self, widths: Sequence[int]) -> "ANNMLP":
        return ANNMLP([self.sizes[0], *widths], self.init_gain)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Record]]:
        """Args: ``x`` ``(B, F)``. Returns ``(logits (B, C), records)``."""
        records = []
        weights = self.masked_weights()
        for i, w in enumerate(weights):
            inp = x
            x = torch.nn.functional.linear(x, w)
            if i < len(weights) - 1:
                x = torch.relu(x)
            records.append((inp[None], x[None]))
        return x, records


class ANNCNN(MaskedNet):
    """Plain PyTorch CNN with ReLU: ``Conv2d -> ReLU -> AvgPool2d`` blocks, flatten, ``Linear -> ReLU``, logits.

    Input ``(B, C, H, W)``; records are ``(T=1, B, ...)`` activations.
    """

    spiking = False

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], hidden: Sequence[int], n_classes: int,
                 kernel: int = 3, pool: int = 2, init_gain: float = 1.0):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.channels, self.hidden = tuple(int(c) for c in channels), tuple(int(h) for h in hidden)
        self.n_classes, self.kernel, self.pool, self.init_gain = int(n_classes), int(kernel), int(pool), float(init_gain)
        c_in, h, w = self.in_shape
        layers = []
        for c in self.channels:
            layers.append(nn.Conv2d(c_in, c, self.kernel, padding=self.kernel // 2, bias=False))
            c_in, h, w = c, h // self.pool, w // self.pool
        self.flat_hw = h * w
        f = c_in * h * w
        for n in (*self.hidden, self.n_classes):
            layers.append(nn.Linear(f, n, bias=False))
            f = n
        self.n_conv = len(self.channels)
        self.layers = nn.ModuleList(layers)
        self._init_masks(init_gain)
        self.avgpool = nn.AvgPool2d(self.pool)

    specs = SpikingCNN.specs

    def config(self) -> dict:
        return {"kind": "ann-cnn", "in_shape": list(self.in_shape), "channels": list(self.channels),
                "hidden": list(self.hidden), "n_classes": self.n_classes, "kernel": self.kernel, "pool": self.pool,
                "init_gain": self.init_gain}

    @classmethod
    def from_config(cls, cfg: dict) -> "ANNCNN":
        return cls(cfg["in_shape"], cfg["channels"], cfg["hidden"], cfg["n_classes"], cfg["kernel"], cfg["pool"],
                   cfg.get("init_gain", 1.0))

    def resized(self, widths: Sequence[int]) -> "ANNCNN":
        k = self.n_conv
        return ANNCNN(self.in_shape, widths[:k], widths[k:-1], widths[-1], self.kernel, self.pool, self.init_gain)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[Record]]:
        records = []
        weights = self.masked_weights()
        for i, w in enumerate(weights):
            if i == self.n_conv:
                x = x.flatten(1)
            inp = x
            if i < self.n_conv:
                x = torch.relu(torch.nn.functional.conv2d(x, w, padding=self.kernel // 2))
                records.append((inp[None], x[None]))
                x = self.avgpool(x)
            else:
                x = torch.nn.functional.linear(x, w)
                if i < len(weights) - 1:
                    x = torch.relu(x)
                records.append((inp[None], x[None]))
        return x, records


MODEL_KINDS = {"snn-mlp": SpikingMLP, "snn-cnn": SpikingCNN, "ann-mlp": ANNMLP, "ann-cnn": ANNCNN}


def model_from_config(cfg: dict) -> MaskedNet:
    """Rebuild any model from its ``config()`` (checkpoints)."""
    return MODEL_KINDS[cfg.get("kind", "snn-mlp")].from_config(cfg)
