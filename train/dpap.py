"""DPAP: developmental plasticity-inspired adaptive pruning.

Han, Zhao, Zeng, Shen, "Developmental Plasticity-inspired Adaptive Pruning for Deep
Spiking and Artificial Neural Networks", IEEE TPAMI 47(1):240-251, 2025
(arXiv 2211.12714); the rules as written in ``shared/specs/dpap.md``:

* scores (per batch, no gradients): spiking trace ``tr`` (sec. 1, eq. 2-3), BCM matrix
  ``M`` with sliding threshold ``theta`` and activity ``A`` (sec. 2, eq. 4-6);
* dendritic spine value per neuron (sec. 3, eq. 7): ``norm(sum_j M[:, j]) * norm(A)``;
* the rule (per epoch, from epoch ``e0``; sec. 4, eq. 9-11): survival accumulator ``R``
  ("use it or lose it, gradually decay"), permanent removal when ``R < 0``.

Scores (:func:`spiking_trace`, :func:`spine_value`) are kept apart from the rule
(:func:`survival_update`) and from compaction (``train/compact.py``), as in Torch-Pruning.
All state lives in one :class:`DPAPState` object that can be saved and restored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import torch


@dataclass(frozen=True)
class RuleConstants:
    """Constants of the survival rule for one kind of prunable element.

    Attributes:
        c: decay value (paper ``epsilon``); larger prunes more.
        b: protection added to positive updates (paper ``C``).
        rho: decay-rate epochs of the staircase ``exp(-floor((e - e0) / rho))`` (paper ``eta``).
    """

    c: float
    b: float
    rho: float


@dataclass(frozen=True)
class DPAPConfig:
    """DPAP constants (defaults from ``shared/specs/dpap.md`` sec. 4, fully connected SNN).

    Attributes:
        delta: trace decay per time step (sec. 1).
        e0: first epoch (0-based) at which pruning runs; earlier epochs only gather scores.
        r_init: initial survival value ``R`` (paper ``beta``).
        gamma: per-epoch retention of ``R`` (eq. 11).
        fc_neuron, fc_synapse: rule constants for neuron and synapse pruning of FC layers.
        percentiles: ``(lo, hi)`` of ``unit()``; (0, 75) as in the CIFAR code, (5, 80) in N-MNIST/DVS code.
        reset_each_epoch: reset ``M`` and ``A`` after each pruning step (paper eq. 6); False
            accumulates over the whole run (BrainCog CIFAR code).
        staircase: ``exp(-floor((e - e0)/rho))`` (code) instead of ``exp(-e/rho)`` (paper).
        prune_output: also prune the output layer (the reference code does not).
        prune_neurons, prune_synapses: switch either granularity off.
    """

    delta: float = 0.5
    e0: int = 5
    r_init: float = 10.0
    gamma: float = 0.999
    fc_neuron: RuleConstants = field(default_factory=lambda: RuleConstants(1.5, 2.0, 13.0))
    fc_synapse: RuleConstants = field(default_factory=lambda: RuleConstants(1.5, 2.0, 13.0))
    percentiles: tuple = (0.0, 75.0)
    reset_each_epoch: bool = True
    staircase: bool = True
    prune_output: bool = False
    prune_neurons: bool = True
    prune_synapses: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DPAPConfig":
        d = dict(d)
        for k in ("fc_neuron", "fc_synapse"):
            if isinstance(d.get(k), dict):
                d[k] = RuleConstants(**d[k])
        if "percentiles" in d:
            d["percentiles"] = tuple(d["percentiles"])
        return cls(**d)


PRESETS = {
    # spec sec. 4 defaults (BrainCog CIFAR-10 SNN code)
    "cifar-snn": DPAPConfig(),
    # the first author's MNIST SNN script: FC c/b/rho = 0.625/2/10, beta (r_init) = 5
    # (spec sec. 4, "Per-dataset values in the scripts"); our default for the digits MLP
    "mnist-snn": DPAPConfig(fc_neuron=RuleConstants(0.625, 2.0, 10.0), fc_synapse=RuleConstants(0.625, 2.0, 10.0),
                            r_init=5.0),
}


def spiking_trace(spikes: torch.Tensor, delta: float = 0.5) -> torch.Tensor:
    """Activity-dependent spiking trace, spec sec. 1 (paper eq. 2-3).

    ``x(0) = 0; x(t) = delta * x(t-1) + s(t); tr = x(T) / T``.

    Args:
        spikes: ``(T, B, N)`` (0/1).
        delta: decay per time step.

    Returns:
        ``tr`` of shape ``(B, N)``.
    """
    T = spikes.shape[0]
    x = torch.zeros_like(spikes[0])
    for t in range(T):
        x = delta * x + spikes[t]
    return x / T


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """``(x - min) / (max - min)``, 0.5 everywhere when the range is 0 (spec sec. 3)."""
    lo, hi = x.min(), x.max()
    if float(hi - lo) == 0.0:
        return torch.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def spine_value(M: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Dendritic spine value per neuron, spec sec. 3 (paper eq. 7).

    Args:
        M: BCM matrix ``(N_l, N_{l-1})``.
        A: accumulated activity ``(N_l,)``.

    Returns:
        ``norm(sum_j M[:, j]) * norm(A)``, shape ``(N_l,)``.
    """
    return _minmax(M.sum(1)) * _minmax(A)


def unit_scale(x: torch.Tensor, percentiles=(0.0, 75.0)) -> torch.Tensor:
    """``clip((x - P_lo) / (P_hi - P_lo), 0, 1)``, 0.5 where the range is 0 (spec sec. 4)."""
    lo = torch.quantile(x.double(), percentiles[0] / 100.0).to(x.dtype) if percentiles[0] > 0 else x.min()
    hi = torch.quantile(x.double(), percentiles[1] / 100.0).to(x.dtype)
    if float(hi - lo) <= 0.0:
        return torch.full_like(x, 0.5)
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def survival_update(
    R: torch.Tensor,
    score: torch.Tensor,
    alive: torch.Tensor,
    epoch: int,
    k: RuleConstants,
    cfg: DPAPConfig,
) -> torch.Tensor:
    """One epoch of "use it or lose it, gradually decay" (spec sec. 4, paper eq. 9-11).

    ``d = 2*unit(score) - c; d[d > 0] += b; R = gamma*R + d*exp(-floor((e-e0)/rho))``.
    ``unit()`` is computed over the elements still alive; removed elements keep their ``R``.

    Args:
        R: survival values, any shape; updated in place where ``alive``.
        score: importance of the same shape.
        alive: boolean mask of the same shape.
        epoch: current epoch ``e`` (0-based).

    Returns:
        The new ``alive`` mask: ``alive & (R >= 0)`` (removal is permanent).
    """
    if not bool(alive.any()):
        return alive
    s = score[alive]
    d = 2.0 * unit_scale(s, cfg.percentiles) - k.c
    d = torch.where(d > 0, d + k.b, d)
    steps = epoch - cfg.e0
    factor = math.exp(-math.floor(steps / k.rho)) if cfg.staircase else math.exp(-epoch / k.rho)
    R[alive] = cfg.gamma * R[alive] + d * factor
    return alive & (R >= 0)


class DPAPState:
    """All DPAP state of one network: scores, accumulators, masks, batch count.

    The prunable layers are the fully connected layers ``0 .. L-2`` (all but the output,
    unless ``cfg.prune_output``). Per prunable layer ``l`` with ``N`` neurons and ``F`` inputs:
    ``M (N, F)``, ``theta (N,)``, ``A (N,)``, ``R_neuron (N,)``, ``R_synapse (N, F)``,
    ``neuron_alive (N,)``, ``synapse_alive (N, F)``.

    Args:
        sizes: ``(F, N_1, ..., N_L)`` of the network.
        cfg: DPAP constants.
    """

    def __init__(self, sizes: Sequence[int], cfg: DPAPConfig = DPAPConfig()):
        self.cfg = cfg
        self.sizes = tuple(int(s) for s in sizes)
        n_layers = len(self.sizes) - 1
        self.layers = list(range(n_layers if cfg.prune_output else n_layers - 1))
        self.k = 0  # batches seen (never reset)
        self.M: Dict[int, torch.Tensor] = {}
        self.theta: Dict[int, torch.Tensor] = {}
        self.A: Dict[int, torch.Tensor] = {}
        self.R_neuron: Dict[int, torch.Tensor] = {}
        self.R_synapse: Dict[int, torch.Tensor] = {}
        self.neuron_alive: Dict[int, torch.Tensor] = {}
        self.synapse_alive: Dict[int, torch.Tensor] = {}
        for l in self.layers:
            n, f = self.sizes[l + 1], self.sizes[l]
            self.M[l] = torch.zeros(n, f, dtype=torch.float64)
            self.theta[l] = torch.zeros(n, dtype=torch.float64)
            self.A[l] = torch.zeros(n, dtype=torch.float64)
            self.R_neuron[l] = torch.full((n,), cfg.r_init, dtype=torch.float64)
            self.R_synapse[l] = torch.full((n, f), cfg.r_init, dtype=torch.float64)
            self.neuron_alive[l] = torch.ones(n, dtype=torch.bool)
            self.synapse_alive[l] = torch.ones(n, f, dtype=torch.bool)

    @torch.no_grad()
    def observe(self, inputs: torch.Tensor, spikes: List[torch.Tensor]) -> None:
        """Accumulate one batch's scores (spec sec. 1-2), after the forward pass.

        Args:
            inputs: input spikes ``(T, B, F)``.
            spikes: spikes of every population, list of ``(T, B, N_l)``.
        """
        self.k += 1
        pre_all = [inputs] + list(spikes[:-1])
        for l in self.layers:
            tr_pre = spiking_trace(pre_all[l].detach().double(), self.cfg.delta)
            tr = spiking_trace(spikes[l].detach().double(), self.cfg.delta)
            self.M[l] += (tr * (tr - self.theta[l])).T @ tr_pre
            self.theta[l] = (self.theta[l] * (self.k - 1) + tr.mean(0)) / self.k
            self.A[l] += tr.sum(0)

    @torch.no_grad()
    def end_epoch(self, epoch: int) -> Dict[str, dict]:
        """Run the pruning rule after epoch ``epoch`` (0-based) if ``epoch >= e0``.

        Returns:
            Per layer name ``fc{l+1}``: neurons and synapses alive (effective: a removed
            neuron takes its synapses with it).
        """
        cfg = self.cfg
        if epoch >= cfg.e0:
            for l in self.layers:
                if cfg.prune_neurons:
                    spine = spine_value(self.M[l], self.A[l])
                    self.neuron_alive[l] = survival_update(
                        self.R_neuron[l], spine, self.neuron_alive[l], epoch, cfg.fc_neuron, cfg
                    )
                if cfg.prune_synapses:
                    eff = self.synapse_alive[l] & self.neuron_alive[l][:, None]
                    new_eff = survival_update(self.R_synapse[l], self.M[l], eff, epoch, cfg.fc_synapse, cfg)
                    self.synapse_alive[l] = self.synapse_alive[l] & (new_eff | ~eff)
            if cfg.reset_each_epoch:
                for l in self.layers:
                    self.M[l].zero_()
                    self.A[l].zero_()
        return self.summary()

    def mask(self, l: int) -> Optional[torch.Tensor]:
        """Effective synapse mask of layer ``l`` ``(N_l, N_{l-1})``, or None if not prunable."""
        if l not in self.synapse_alive:
            return None
        return self.synapse_alive[l] & self.neuron_alive[l][:, None]

    @torch.no_grad()
    def apply(self, model, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Write the masks into ``model`` (``mask{l}`` buffers), zero pruned weights and
        their optimizer state, so that a removed synapse stays exactly zero."""
        for l in self.layers:
            m = self.mask(l)
            model.masks[l].copy_(m & model.masks[l])
        model.apply_masks()
        if optimizer is not None:
            for fc, m in zip(model.fcs, model.masks):
                st = optimizer.state.get(fc.weight, {})
                for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                    if key in st and st[key] is not None:
                        st[key].mul_(m)

    def summary(self) -> Dict[str, dict]:
        out = {}
        for l in self.layers:
            out[f"fc{l + 1}"] = {
                "neurons_alive": int(self.neuron_alive[l].sum()),
                "neurons": int(self.neuron_alive[l].numel()),
                "synapses_alive": int(self.mask(l).sum()),
                "synapses": int(self.synapse_alive[l].numel()),
            }
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume: config, batch count and every per-layer tensor."""
        tensors = {}
        for name in ("M", "theta", "A", "R_neuron", "R_synapse", "neuron_alive", "synapse_alive"):
            tensors[name] = {str(l): t.clone() for l, t in getattr(self, name).items()}
        return {"cfg": self.cfg.to_dict(), "sizes": list(self.sizes), "k": self.k, "tensors": tensors}

    @classmethod
    def from_state_dict(cls, d: dict) -> "DPAPState":
        st = cls(d["sizes"], DPAPConfig.from_dict(d["cfg"]))
        st.k = int(d["k"])
        for name, per_layer in d["tensors"].items():
            getattr(st, name).update({int(l): t.clone() for l, t in per_layer.items()})
        return st
