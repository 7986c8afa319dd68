"""Norse spiking networks with synapse masks.

The SNN is a chain of fully connected synapse layers (``torch.nn.Linear``, no bias),
each followed by a population of current-based LIF neurons (``norse.torch.LIFCell``).
The output population spikes as well; the class score is its spike count over the
``T`` time steps (the same readout Lava uses). Tensors are time first as in Norse:
input ``(T, B, F)``, spikes ``(T, B, N)``.

Neuron parameters are kept here in SI units (``tau_syn_inv``/``tau_mem_inv`` in 1/s,
``dt`` in s) and saved by :meth:`SpikingMLP.config`, because Norse does not register
them in ``state_dict()`` (``shared/specs/deployment.md`` section 4b).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Sequence, Tuple

import torch
from torch import nn


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


class SpikingMLP(nn.Module):
    """Feed-forward LIF network, e.g. 64-256-128-10.

    Args:
        sizes: ``(F, N_1, ..., N_L)`` neurons per population, input first.
        lif: neuron parameters, shared by all populations.
        init_gain: multiplies PyTorch's default ``Linear`` initialisation so that a
            random network spikes from the first batch.

    Attributes:
        fcs: ``L`` synapse layers, weight shape ``(N_l, N_{l-1})``.
        masks: ``L`` boolean buffers of the weights' shapes; ``False`` = pruned synapse.
            The forward pass uses ``weight * mask``, so a pruned synapse is exactly zero.
    """

    def __init__(self, sizes: Sequence[int], lif: LIFConfig = LIFConfig(), init_gain: float = 2.0):
        super().__init__()
        import norse.torch as norse

        if len(sizes) < 2:
            raise ValueError(f"sizes must name an input and at least one layer, got {tuple(sizes)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.lif = lif
        self.init_gain = float(init_gain)
        self.fcs = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        with torch.no_grad():
            for fc in self.fcs:
                fc.weight.mul_(init_gain)
        for i, fc in enumerate(self.fcs):
            self.register_buffer(f"mask{i}", torch.ones_like(fc.weight, dtype=torch.bool))
        p = norse.LIFParameters(
            tau_syn_inv=torch.as_tensor(lif.tau_syn_inv),
            tau_mem_inv=torch.as_tensor(lif.tau_mem_inv),
            v_th=torch.as_tensor(lif.v_th),
            method=lif.surrogate,
        )
        self.cells = nn.ModuleList(norse.LIFCell(p=p, dt=lif.dt) for _ in self.fcs)

    @property
    def masks(self) -> List[torch.Tensor]:
        return [getattr(self, f"mask{i}") for i in range(len(self.fcs))]

    def layer_names(self) -> List[str]:
        """``fc1 .. fcL``; the last one is the output (readout) population."""
        return [f"fc{i + 1}" for i in range(len(self.fcs))]

    def config(self) -> dict:
        """Everything needed to rebuild the module (saved in checkpoints)."""
        return {"sizes": list(self.sizes), "lif": asdict(self.lif), "init_gain": self.init_gain}

    @classmethod
    def from_config(cls, cfg: dict) -> "SpikingMLP":
        return cls(cfg["sizes"], LIFConfig(**cfg["lif"]), cfg.get("init_gain", 1.0))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run ``T`` time steps.

        Args:
            x: input spikes ``(T, B, F)``.

        Returns:
            ``(counts, spikes)``: output spike counts ``(B, N_L)`` and the spikes of every
            population, a list of ``L`` tensors ``(T, B, N_l)`` (the last is the output).
        """
        if x.dim() != 3 or x.shape[-1] != self.sizes[0]:
            raise ValueError(f"input must be (T, B, {self.sizes[0]}), got {tuple(x.shape)}")
        weights = [fc.weight * m for fc, m in zip(self.fcs, self.masks)]
        states = [None] * len(self.fcs)
        records: List[List[torch.Tensor]] = [[] for _ in self.fcs]
        for t in range(x.shape[0]):
            z = x[t]
            for i, (w, cell) in enumerate(zip(weights, self.cells)):
                z, states[i] = cell(torch.nn.functional.linear(z, w), states[i])
                records[i].append(z)
        spikes = [torch.stack(r) for r in records]
        return spikes[-1].sum(0), spikes

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every pruned weight in place (called after each optimizer step)."""
        for fc, m in zip(self.fcs, self.masks):
            fc.weight.mul_(m)
