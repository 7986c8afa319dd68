"""DPAP: developmental plasticity-inspired adaptive pruning.

Han, Zhao, Zeng, Shen, "Developmental Plasticity-inspired Adaptive Pruning for Deep
Spiking and Artificial Neural Networks", IEEE TPAMI 47(1):240-251, 2025
(arXiv 2211.12714); the rules as written in ``docs/dpap.md``:

* scores (per batch, no gradients): spiking trace ``tr`` (docs/dpap.md sec. 2, paper eqs. 2-3), BCM matrix
  ``M`` with sliding threshold ``theta`` and activity ``A`` (sec. 3, paper eqs. 4-6);
* dendritic spine value per neuron (sec. 4, paper eq. 7): ``norm(sum_j M[:, j]) * norm(A)``;
* the rule (per epoch, from epoch ``e0``; sec. 5, paper eqs. 9-11): survival accumulator ``R``
  ("use it or lose it, gradually decay"), permanent removal when ``R < 0``.

Scores (:func:`spiking_trace`, :func:`spine_value`) are kept apart from the rule
(:func:`survival_update`) and from compaction (``train/compact.py``), as in Torch-Pruning.
All state lives in one :class:`DPAPState` object that can be saved and restored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from dpap_deploy.train.compact import input_columns
from dpap_deploy.train.models import LayerSpec


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


#: what ``unit()`` may scale over (:attr:`DPAPConfig.normalise`)
NORMALISE = ("alive", "all")
#: what may rank synapses (:attr:`DPAPConfig.synapse_score`)
SYNAPSE_SCORES = ("bcm", "bcm-weight", "weight")


@dataclass(frozen=True)
class DPAPConfig:
    """DPAP constants (defaults: the ``cifar-snn`` preset, ``docs/dpap.md`` sec. 11.2).

    Attributes:
        delta: trace decay per time step (sec. 1).
        e0: first epoch (0-based) at which pruning runs; earlier epochs only gather scores.
        r_init: initial survival value ``R`` (paper ``beta``).
        gamma: per-epoch retention of ``R`` (eq. 11).
        fc_neuron, fc_synapse: rule constants for neuron and synapse pruning of FC layers.
        conv_channel, conv_synapse: the same for conv channels (filters) and channel-to-channel
            connections (docs/dpap.md sec. 11.3: 0.65/5/12 BrainCog CIFAR code; 1.4/5/10 the N-MNIST conv-synapse script).
        conv_channels, conv_synapses: which conv granularities run (channel pruning is what
            shrinks a chip mapping; both may be on).
        percentiles: ``(lo, hi)`` of ``unit()``; (0, 75) as in the CIFAR code, (5, 80) in N-MNIST/DVS code.
        reset_each_epoch: reset ``M`` and ``A`` after each pruning step (paper eq. 6); False
            accumulates over the whole run (BrainCog CIFAR code).
        staircase: ``exp(-floor((e - e0)/rho))`` (code) instead of ``exp(-e/rho)`` (paper).
        prune_output: also prune the output layer (the reference code does not).
        prune_neurons, prune_synapses: switch either granularity off.
        timestep: rule constants of timestep pruning (docs/dpap.md sec. 7, paper eq. 8: ``c`` is the
            paper's ``epsilon``, ``rho`` its ``eta``); None (default) prunes in space only.
        normalise: the elements ``unit()`` scales over (docs/dpap.md sec. 5.1): ``"alive"`` (ours so
            far: the survivors only, so the bottom of the survivors scores 0 every epoch) or
            ``"all"`` (the authors' code: removed elements included, so the survivors' scaled
            values stay put as others are removed).
        stop_epoch: no pruning at or after this epoch (0-based): the recovery tail in which the
            network trains at its final structure; None prunes to the end.
        staircase_origin: the epoch subtracted in the staircase exponent ``floor((e - origin)/rho)``;
            None means ``e0`` (the CIFAR code), 0 the MNIST, N-MNIST and DVS-Gesture scripts.
        prune_first: prune the first weight layer too (the N-MNIST and DVS-Gesture scripts leave
            ``conv1`` whole).
        synapse_score: what ranks synapses: ``"bcm"`` (the paper: the BCM matrix ``M``, eq. 6) or
            ``"bcm-weight"`` (ours, docs/dpap.md sec. 6.7: ``unit(M) * |w|``, so a synapse survives
            by being both used and strong) or ``"weight"`` (ours: ``|w|`` alone, magnitude ranking
            under DPAP's gradual survival rule; neurons still go by their spine value).
        synops_cost_power: ``p`` of ``--pruner dpap-synops`` (``train/pruners.py``, docs/dpap.md sec.
            6.10): synapses ranked by ``|w| / c_l ** p``, ``c_l`` their layer's synaptic operations per
            synapse; 0 is magnitude ranking. 0.25 keeps the 2C2F within a test sample of magnitude
            pruning (benchmarks/README.md, third round). Other pruners ignore it.
        timestep_target: ours, beyond the paper (docs/dpap.md sec. 7.5, ``--timestep-target``): the
            fraction of each prunable layer's (unit, step) pairs (units alive) silenced at the end of
            pruning, in (0, 1). The pairs are ranked by eq. 8's importance ``Time`` and the lowest
            silenced on a cubic schedule from ``e0`` to ``stop_epoch`` (which it needs: the run-length
            schedule sets it), instead of by the survival rule; no unit loses its last step. None
            (default): the timestep rule ``timestep``, if any.
        regrow: ours, beyond the paper (docs/dpap.md sec. 6.11, ``--regrow``): ``alpha_0`` of the
            pruners that rank synapses globally (``magnitude``, ``dpap-magnitude``, ``dpap-synops``):
            after each pruning epoch that fraction (decaying on a cosine to 0 at ``stop_epoch``) of the
            live synapses is exchanged, the lowest-ranked dropped and as many regrown where Adam's
            first moment of the gradient is largest (RigL / sparse momentum). 0 (default): no
            regrowth. Other pruners refuse it.
    """

    delta: float = 0.5
    e0: int = 5
    r_init: float = 10.0
    gamma: float = 0.999
    fc_neuron: RuleConstants = field(default_factory=lambda: RuleConstants(1.5, 2.0, 13.0))
    fc_synapse: RuleConstants = field(default_factory=lambda: RuleConstants(1.5, 2.0, 13.0))
    conv_channel: RuleConstants = field(default_factory=lambda: RuleConstants(0.65, 5.0, 12.0))
    conv_synapse: RuleConstants = field(default_factory=lambda: RuleConstants(1.4, 5.0, 10.0))
    conv_channels: bool = True
    conv_synapses: bool = False
    percentiles: tuple = (0.0, 75.0)
    reset_each_epoch: bool = True
    staircase: bool = True
    prune_output: bool = False
    prune_neurons: bool = True
    prune_synapses: bool = True
    timestep: Optional[RuleConstants] = None
    normalise: str = "alive"
    stop_epoch: Optional[int] = None
    staircase_origin: Optional[int] = None
    prune_first: bool = True
    synapse_score: str = "bcm"
    synops_cost_power: float = 0.25
    timestep_target: Optional[float] = None
    regrow: float = 0.0

    def __post_init__(self):
        if self.normalise not in NORMALISE:
            raise ValueError(f"DPAPConfig.normalise must be one of {', '.join(NORMALISE)}, got {self.normalise!r}")
        if self.synapse_score not in SYNAPSE_SCORES:
            raise ValueError(f"DPAPConfig.synapse_score must be one of {', '.join(SYNAPSE_SCORES)}, "
                             f"got {self.synapse_score!r}")
        if not 0.0 <= self.synops_cost_power <= 4.0:
            raise ValueError(f"DPAPConfig.synops_cost_power must be in [0, 4], got {self.synops_cost_power}")
        if not 0.0 <= self.regrow < 1.0:
            raise ValueError(f"DPAPConfig.regrow must be in [0, 1), got {self.regrow}")
        if self.timestep_target is not None and not 0.0 < self.timestep_target < 1.0:
            raise ValueError(f"DPAPConfig.timestep_target must be in (0, 1), got {self.timestep_target}")
        if self.timestep_target is not None and self.timestep is not None:
            raise ValueError("DPAPConfig: timestep (the survival rule's constants) and timestep_target (a "
                             "target fraction) both choose how time steps are pruned; set one")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"DPAPConfig.percentiles must be (lo, hi) with 0 <= lo < hi <= 100, got {self.percentiles}")
        if self.stop_epoch is not None and self.stop_epoch <= self.e0:
            raise ValueError(f"DPAPConfig.stop_epoch ({self.stop_epoch}) must be after e0 ({self.e0}): "
                             "the rule would never run")

    @property
    def timed(self) -> bool:
        """Time steps are pruned (by the rule ``timestep`` or to ``timestep_target``)."""
        return self.timestep is not None or self.timestep_target is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DPAPConfig":
        d = dict(d)
        for k in ("fc_neuron", "fc_synapse", "conv_channel", "conv_synapse", "timestep"):
            if isinstance(d.get(k), dict):
                d[k] = RuleConstants(**d[k])
        if "percentiles" in d:
            d["percentiles"] = tuple(d["percentiles"])
        return cls(**d)


PRESETS = {
    # docs/dpap.md sec. 11.2: the BrainCog CIFAR-10 SNN code's constants; every preset of the
    # authors' code scales unit() over all elements, removed ones included (normalise="all", sec. 5.2)
    "cifar-snn": DPAPConfig(normalise="all"),
    # the first author's MNIST SNN script: FC c/b/rho = 0.625/2/10, beta (r_init) = 5
    # (docs/dpap.md sec. 11.3); our default for the digits MLP
    "mnist-snn": DPAPConfig(fc_neuron=RuleConstants(0.625, 2.0, 10.0), fc_synapse=RuleConstants(0.625, 2.0, 10.0),
                            r_init=5.0, normalise="all"),
    # the author's MNIST ANN script: conv 0.525/5/10, FC 0.75/2/12 (docs/dpap.md sec. 11.3)
    "mnist-ann": DPAPConfig(fc_neuron=RuleConstants(0.75, 2.0, 12.0), fc_synapse=RuleConstants(0.75, 2.0, 12.0),
                            conv_channel=RuleConstants(0.525, 5.0, 10.0), normalise="all"),
    # the authors' N-MNIST script (docs/dpap.md sec. 11.3): kernel slices of every conv layer but the
    # first at 1.4/5/10, FC synapses 0.4/2/10, no neuron or channel pruning, beta 5, unit() over
    # [P5, P80], from epoch 1 with the staircase counted from epoch 0, scores reset every epoch
    "nmnist-snn": DPAPConfig(fc_synapse=RuleConstants(0.4, 2.0, 10.0), conv_synapse=RuleConstants(1.4, 5.0, 10.0),
                             conv_channels=False, conv_synapses=True, prune_neurons=False, prune_first=False,
                             r_init=5.0, percentiles=(5.0, 80.0), e0=1, staircase_origin=0, normalise="all"),
    # the authors' DVS-Gesture script: as N-MNIST with conv slices 0.7/5/10, FC synapses 0.67/2/10, beta 10
    "dvs-snn": DPAPConfig(fc_synapse=RuleConstants(0.67, 2.0, 10.0), conv_synapse=RuleConstants(0.7, 5.0, 10.0),
                          conv_channels=False, conv_synapses=True, prune_neurons=False, prune_first=False,
                          r_init=10.0, percentiles=(5.0, 80.0), e0=1, staircase_origin=0, normalise="all"),
    # ours (benchmarks/README.md, "Pruners against what a chip pays for"): mnist-snn's constants
    # with unit() over [P0, P97], which lets a layer go past the ~75 % sparsity that [P0, P75]
    # caps it at (docs/dpap.md sec. 5.1)
    "deploy-snn": DPAPConfig(fc_neuron=RuleConstants(0.625, 2.0, 10.0), fc_synapse=RuleConstants(0.625, 2.0, 10.0),
                             r_init=5.0, normalise="all", percentiles=(0.0, 97.0)),
}

#: the run length (epochs) each preset's schedule was written for (docs/dpap.md sec. 11.4): the
#: BrainCog CIFAR code trains 300 epochs, the MNIST SNN script 150; the other scripts' lengths are
#: not in our notes and are taken as the MNIST script's (an assumption, docs/dpap.md sec. 11.5)
PRESET_EPOCHS = {"cifar-snn": 300, "mnist-snn": 150, "mnist-ann": 150, "nmnist-snn": 150, "dvs-snn": 150,
                 "deploy-snn": 150}


def for_run_length(cfg: DPAPConfig, epochs: int, reference_epochs: int, tail: float = 0.25) -> DPAPConfig:
    """``cfg``'s schedule compressed from the ``reference_epochs`` it was written for to a run of
    ``epochs``, with a recovery tail (docs/dpap.md sec. 11.5).

    Time is rescaled by ``s = epochs / reference_epochs``: ``e0``, the staircase origin and every
    ``rho`` by ``s``, ``r_init`` by ``s`` too (an element at the bottom loses up to ``c`` per epoch,
    so it is removed after the same fraction of the run as in the reference). ``rho`` is never
    below 1 epoch; where that holds it up (runs shorter than ``reference_epochs / rho``),
    ``r_init`` is scaled by ``1 / min(rho)`` instead, the factor the staircase really shrank by. ``c`` and ``b`` stay:
    they set *which* elements go, the schedule only *when*; ``gamma`` per epoch becomes
    ``gamma ** (1/s)``. Then no pruning in the last
    ``ceil(tail * epochs)`` epochs (``stop_epoch``), so the network trains at its final structure.

    Args:
        cfg: the constants (a preset).
        epochs: the run's length in epochs (>= 2).
        reference_epochs: the run length ``cfg`` was written for (:data:`PRESET_EPOCHS`).
        tail: fraction of the run, at the end, in which nothing is pruned (``0 <= tail < 1``).

    Returns:
        A new :class:`DPAPConfig`; ``rho`` never below 1 epoch, ``e0`` at least 1 when the
        reference's is (one epoch of scores before the first removal).

    Raises:
        ValueError: ``epochs`` too short for one pruning epoch before the tail, or bad arguments.
    """
    from dataclasses import replace

    if epochs < 2 or reference_epochs < 1 or not 0.0 <= tail < 1.0:
        raise ValueError(f"for_run_length: need epochs >= 2, reference_epochs >= 1, 0 <= tail < 1; got "
                         f"epochs={epochs}, reference_epochs={reference_epochs}, tail={tail}")
    s = epochs / reference_epochs

    def scaled(k: Optional[RuleConstants]) -> Optional[RuleConstants]:
        return None if k is None else RuleConstants(k.c, k.b, max(1.0, k.rho * s))

    e0 = max(1 if cfg.e0 >= 1 else 0, int(round(cfg.e0 * s)))
    stop = epochs - int(math.ceil(tail * epochs))
    if stop <= e0:
        raise ValueError(f"a run of {epochs} epochs is too short: pruning would start at epoch {e0} and stop "
                         f"before epoch {stop} (recovery tail of {epochs - stop} epochs)")
    origin = None if cfg.staircase_origin is None else int(round(cfg.staircase_origin * s))
    # R's head start shrinks with the staircase steps: by s, or by less where rho' was held at 1 epoch
    # (a run shorter than rho * ... epochs), so removal never comes faster than the schedule allows
    rhos = [k.rho for k in (cfg.fc_neuron, cfg.fc_synapse, cfg.conv_channel, cfg.conv_synapse, cfg.timestep)
            if k is not None]
    s_r = max(s, 1.0 / min(rhos)) if rhos else s
    return replace(cfg, e0=e0, stop_epoch=stop, staircase_origin=origin, r_init=cfg.r_init * min(1.0, s_r),
                   gamma=cfg.gamma ** (1.0 / s),
                   fc_neuron=scaled(cfg.fc_neuron), fc_synapse=scaled(cfg.fc_synapse),
                   conv_channel=scaled(cfg.conv_channel), conv_synapse=scaled(cfg.conv_synapse),
                   timestep=scaled(cfg.timestep))


def spiking_trace(spikes: torch.Tensor, delta: float = 0.5) -> torch.Tensor:
    """Activity-dependent spiking trace, docs/dpap.md sec. 2 (paper eqs. 2-3).

    ``x(0) = 0; x(t) = delta * x(t-1) + s(t); tr = x(T) / T``.

    Args:
        spikes: ``(T, B, N)`` (0/1).
        delta: decay per time step.

    Returns:
        ``tr`` of shape ``(B, N)``.
    """
    T = spikes.shape[0]
    # x(T) = sum_t delta^(T-t) s(t): one contraction over time instead of a loop over T
    w = delta ** torch.arange(T - 1, -1, -1, dtype=spikes.dtype, device=spikes.device)
    return torch.tensordot(w, spikes, dims=([0], [0])) / T


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """``(x - min) / (max - min)``, 0.5 everywhere when the range is 0 (docs/dpap.md sec. 4)."""
    lo, hi = x.min(), x.max()
    if float(hi - lo) == 0.0:
        return torch.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def spine_value(M: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Dendritic spine value per neuron, docs/dpap.md sec. 4 (paper eq. 7).

    Args:
        M: BCM matrix ``(N_l, N_{l-1})``.
        A: accumulated activity ``(N_l,)``.

    Returns:
        ``norm(sum_j M[:, j]) * norm(A)``, shape ``(N_l,)``.
    """
    return _minmax(M.sum(1)) * _minmax(A)


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-quantile (``0 <= q <= 1``) of all elements of ``x``, interpolated linearly between
    the two nearest order statistics: the same value as ``torch.quantile(x, q)`` (its default
    ``interpolation="linear"``), but for any size. ``torch.quantile`` refuses inputs of more than
    2**24 (16.7 M) elements, fewer than one fully connected layer of the paper's CIFAR network
    holds; ``torch.kthvalue`` has no such limit.

    Args:
        x: any shape, at least one element; reduced over all elements.
        q: the quantile, a fraction (P75 is ``0.75``).

    Returns:
        A 0-d tensor of ``x``'s dtype.

    Raises:
        ValueError: ``q`` outside ``[0, 1]`` or ``x`` empty.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    flat = x.reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("quantile of an empty tensor")
    pos = q * (n - 1)
    below = int(math.floor(pos))
    above = min(below + 1, n - 1)
    lo = flat.kthvalue(below + 1).values
    if above == below or pos == below:
        return lo
    hi = flat.kthvalue(above + 1).values
    return torch.lerp(lo, hi, torch.tensor(pos - below, dtype=flat.dtype, device=flat.device))


def unit_scale(x: torch.Tensor, percentiles=(0.0, 75.0)) -> torch.Tensor:
    """``clip((x - P_lo) / (P_hi - P_lo), 0, 1)``, 0.5 where the range is 0 (docs/dpap.md sec. 5.1).
    The percentiles come from :func:`quantile`, so layers above 16.7 M elements work too."""
    lo = quantile(x.double(), percentiles[0] / 100.0).to(x.dtype) if percentiles[0] > 0 else x.min()
    hi = quantile(x.double(), percentiles[1] / 100.0).to(x.dtype)
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
    """One epoch of "use it or lose it, gradually decay" (docs/dpap.md sec. 5.2, paper eqs. 9-11).

    ``d = 2*unit(score) - c; d[d > 0] += b; R = gamma*R + d*exp(-floor((e-e0)/rho))``.
    ``unit()`` is computed over the elements still alive (``cfg.normalise == "alive"``) or over all
    of them (``"all"``, the authors' code); removed elements keep their ``R`` either way.

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
    if cfg.normalise == "all":
        u = unit_scale(score, cfg.percentiles)[alive]
    else:
        u = unit_scale(score[alive], cfg.percentiles)
    d = 2.0 * u - k.c
    d = torch.where(d > 0, d + k.b, d)
    steps = epoch - (cfg.e0 if cfg.staircase_origin is None else cfg.staircase_origin)
    factor = math.exp(-math.floor(steps / k.rho)) if cfg.staircase else math.exp(-epoch / k.rho)
    R[alive] = cfg.gamma * R[alive] + d * factor
    return alive & (R >= 0)


def cubic_fraction(target: float, epoch: int, e0: int, stop_epoch: int) -> float:
    """Zhu & Gupta's gradual schedule ("To prune, or not to prune", arXiv 1710.01878, sec. 3):
    the fraction pruned after epoch ``epoch`` (0-based), ``target * (1 - (1 - (e - e0 + 1) / span)^3)``
    with ``span = stop_epoch - e0`` (at least 1), reaching ``target`` after epoch ``stop_epoch - 1``;
    0 before ``e0``. The same schedule as ``train/pruners.py: magnitude_step``."""
    if epoch < e0:
        return 0.0
    span = max(1, stop_epoch - e0)
    return target * (1.0 - (1.0 - min(1.0, (epoch - e0 + 1) / span)) ** 3)


def silence_lowest(score: torch.Tensor, alive: torch.Tensor, fraction: float) -> torch.Tensor:
    """Timestep pruning to a target (docs/dpap.md sec. 7.5): the new mask of (unit, step) pairs
    ``(N, T)`` in which ``fraction`` of the pairs of the units with any step alive are silenced,
    the pairs of lowest ``score`` (eq. 8's ``Time``) first, ties going to the earlier step and then
    the lower unit. Pairs silenced before stay silenced; each unit keeps its best-scoring live step,
    so this rule never removes a unit (that is the neuron rule's job, and a removed unit would take
    its silenced pairs out of ``rho_t``). Never silences fewer than are silenced already.

    Args:
        score: ``(N, T)`` importance.
        alive: ``(N, T)`` bool, the pairs alive now (a removed unit's row all False).
        fraction: in [0, 1).
    """
    units = alive.any(dim=1)
    total = int(units.sum()) * alive.shape[1]
    need = int(round(fraction * total)) - (total - int(alive.sum()))
    if need <= 0:
        return alive
    keep_best = torch.zeros_like(alive)
    best = torch.argmax(torch.where(alive, score, torch.tensor(-torch.inf, dtype=score.dtype)), dim=1)
    keep_best[torch.arange(alive.shape[0]), best] = units
    candidate = alive & ~keep_best
    # step-major order, so that a stable sort breaks ties by step, then by unit
    s, c = score.T.reshape(-1), candidate.T.reshape(-1)
    idx = torch.nonzero(c).squeeze(1)
    order = idx[torch.argsort(s[idx], stable=True)][:need]
    out = alive.T.reshape(-1).clone()
    out[order] = False
    return out.reshape(alive.shape[1], alive.shape[0]).T.contiguous()


def _specs(layers) -> List[LayerSpec]:
    """Layer specs from a list of :class:`LayerSpec` or, for an MLP, its sizes ``(F, N_1, ..., N_L)``."""
    layers = list(layers)
    if layers and isinstance(layers[0], LayerSpec):
        return layers
    sizes = [int(s) for s in layers]
    return [LayerSpec(f"fc{i + 1}", "fc", b, a) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]


def _trace_units(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Spiking trace ``(B, units)``: ``(T, B, N)`` as is; ``(T, B, C, H, W)`` summed over ``H, W``."""
    x = x.detach().double()
    if x.dim() == 5:  # the trace is linear: sum over H, W first, it is cheaper
        x = x.sum(dim=(3, 4))
    return spiking_trace(x, delta)


class DPAPState:
    """All DPAP state of one network: scores, accumulators, masks, batch count.

    Prunable layers: every weight layer but the output (unless ``cfg.prune_output``).
    Per prunable layer ``l`` with ``N`` output units (neurons; conv: channels) and ``F``
    input units (features; conv and the fc layer after a flatten: channels for the
    trace of a conv input, features otherwise): ``M (N, F)``, ``theta (N,)``, ``A (N,)``,
    ``R_neuron (N,)``, ``R_synapse (N, F)``, ``neuron_alive (N,)``, ``synapse_alive (N, F)``.
    For conv layers a "synapse" is a channel-to-channel connection (a kernel slice).
    With ``cfg.timestep`` (docs/dpap.md sec. 7) also ``Time (N, T)``, ``R_time (N, T)`` and
    ``time_alive (N, T)``: unit ``i`` is silent at time step ``t`` where ``time_alive`` is False
    (created at the first :meth:`observe`, which sets ``T``).

    Args:
        layers: :class:`~dpap_deploy.train.models.LayerSpec` per weight layer (``model.specs()``),
            or the sizes ``(F, N_1, ..., N_L)`` of an MLP.
        cfg: DPAP constants.
    """

    def __init__(self, layers, cfg: DPAPConfig = DPAPConfig()):
        if cfg.timestep_target is not None and cfg.stop_epoch is None:
            raise ValueError("DPAPConfig.timestep_target needs stop_epoch, where its schedule ends (the run-length "
                             "schedule, for_run_length(), sets it)")
        self.cfg = cfg
        self.specs = _specs(layers)
        n_layers = len(self.specs)
        self.layers = list(range(0 if cfg.prune_first else 1, n_layers if cfg.prune_output else n_layers - 1))
        self.k = 0  # batches seen (never reset)
        self.M: Dict[int, torch.Tensor] = {}
        self.theta: Dict[int, torch.Tensor] = {}
        self.A: Dict[int, torch.Tensor] = {}
        self.R_neuron: Dict[int, torch.Tensor] = {}
        self.R_synapse: Dict[int, torch.Tensor] = {}
        self.neuron_alive: Dict[int, torch.Tensor] = {}
        self.synapse_alive: Dict[int, torch.Tensor] = {}
        for l in self.layers:
            sp = self.specs[l]
            n, f = sp.n_out, sp.n_in * sp.in_block
            self.M[l] = torch.zeros(n, f, dtype=torch.float64)
            self.theta[l] = torch.zeros(n, dtype=torch.float64)
            self.A[l] = torch.zeros(n, dtype=torch.float64)
            self.R_neuron[l] = torch.full((n,), cfg.r_init, dtype=torch.float64)
            self.R_synapse[l] = torch.full((n, f), cfg.r_init, dtype=torch.float64)
            self.neuron_alive[l] = torch.ones(n, dtype=torch.bool)
            self.synapse_alive[l] = torch.ones(n, f, dtype=torch.bool)
        # budget feedback (docs/dpap.md sec. 13): extra decay value added to ``c`` per layer, a
        # switch that stops pruning once the mapped network fits its budget, and one that keeps
        # pruning past ``stop_epoch`` (into the recovery tail) while it does not fit yet
        self.c_boost: Dict[int, float] = {l: 0.0 for l in self.layers}
        self.frozen = False
        self.budget_unmet = False
        self.Time: Dict[int, torch.Tensor] = {}
        self.R_time: Dict[int, torch.Tensor] = {}
        self.time_alive: Dict[int, torch.Tensor] = {}

    def base_constants(self, l: int):
        """``(neuron, synapse)`` rule constants of layer ``l`` from the config (no budget boost)."""
        if self.specs[l].kind == "conv":
            return self.cfg.conv_channel, self.cfg.conv_synapse
        return self.cfg.fc_neuron, self.cfg.fc_synapse

    def _constants(self, l: int):
        k_neuron, k_synapse = self.base_constants(l)
        boost = self.c_boost.get(l, 0.0)
        if boost:
            k_neuron = RuleConstants(k_neuron.c + boost, k_neuron.b, k_neuron.rho)
            k_synapse = RuleConstants(k_synapse.c + boost, k_synapse.b, k_synapse.rho)
        return k_neuron, k_synapse

    @torch.no_grad()
    def observe(self, records, reduce: Optional[Callable[[List[torch.Tensor]], List[torch.Tensor]]] = None) -> None:
        """Accumulate one batch's scores (docs/dpap.md secs. 2-3), after the forward pass.

        Args:
            records: per weight layer ``(pre, post)``, time first: the layer's input
                ``(T, B, F)`` or ``(T, B, C, H, W)`` and its output spikes (ANN: activations, ``T = 1``).
            reduce: data-parallel training (``train/distributed.py``): sums a list of
                float64 tensors over all ranks in place. The batch's increments of ``M`` and
                ``A`` and its trace sum and sample count (for ``theta``'s batch mean) are
                reduced before they are applied (with timestep pruning also the increment of
                ``Time``), so every rank accumulates the global batch, and ``k`` counts global
                batches. ``None``: this process holds the whole batch.
        """
        self.k += 1
        n = None
        timed = self.cfg.timed
        stats: List[torch.Tensor] = []
        for l in self.layers:
            pre, post = records[l]
            tr_pre = _trace_units(pre, self.cfg.delta).cpu()  # the statistics live on the CPU (small)
            tr = _trace_units(post, self.cfg.delta).cpu()
            n = tr.shape[0]
            stats += [(tr * (tr - self.theta[l])).T @ tr_pre, tr.sum(0)]  # sums over the batch
            if timed:
                stats.append(self._time_increment(pre, post))
        if reduce is not None:
            *stats, count = reduce(stats + [torch.tensor([float(n or 0)], dtype=torch.float64)])
            n = float(count)
        per = 3 if timed else 2
        for i, l in enumerate(self.layers):
            dM, tr_sum = stats[per * i], stats[per * i + 1]
            self.M[l] += dM
            self.theta[l] = (self.theta[l] * (self.k - 1) + tr_sum / n) / self.k  # / n: tr.mean(0), bitwise
            self.A[l] += tr_sum
            if timed:
                self._add_time(l, stats[per * i + 2])

    def _time_increment(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """One batch's ``sum_b (sum_j x_pre,j(t)) * s_i(t)`` ``(N, T)`` (docs/dpap.md sec. 7.1, paper eq. 8): the
        presynaptic trace ``x(t) = delta*x(t-1) + s(t)`` summed over all presynaptic neurons, times
        unit ``i``'s spikes at ``t`` (conv: summed over the channel's pixels)."""
        steps = post.shape[0]
        pre_sum = pre.detach().double().reshape(steps, pre.shape[1], -1).sum(2).cpu()  # (T, B)
        t = torch.arange(steps, dtype=torch.float64)
        decay = torch.tril(self.cfg.delta ** (t[:, None] - t[None, :]).clamp(min=0))  # x = decay @ pre_sum
        x = decay @ pre_sum
        s = post.detach().double()
        if s.dim() == 5:
            s = s.sum(dim=(3, 4))
        return torch.einsum("tb,tbi->it", x, s.cpu())

    def _add_time(self, l: int, inc: torch.Tensor) -> None:
        """``Time[l] += inc``; the first call sets ``T`` and creates ``R_time`` and ``time_alive``. A
        run shorter than ``T`` (a window shortened by timestep pruning) adds to the first steps."""
        n, steps = inc.shape
        if l not in self.Time:
            self.Time[l] = torch.zeros(n, steps, dtype=torch.float64)
            self.R_time[l] = torch.full((n, steps), self.cfg.r_init, dtype=torch.float64)
            self.time_alive[l] = torch.ones(n, steps, dtype=torch.bool)
        if steps > self.Time[l].shape[1]:
            raise ValueError(f"layer {self.specs[l].name}: {steps} time steps, timestep pruning began with "
                             f"{self.Time[l].shape[1]}")
        self.Time[l][:, :steps] += inc

    @torch.no_grad()
    def end_epoch(self, epoch: int, weights: Optional[List[torch.Tensor]] = None) -> Dict[str, dict]:
        """Run the pruning rule after epoch ``epoch`` (0-based) if ``epoch >= e0``, before
        ``stop_epoch`` (or later while ``budget_unmet``: a hardware budget not met yet takes the
        recovery tail's epochs), and the state is not ``frozen`` (a hardware budget was met). Layer
        ``l`` uses ``c + c_boost[l]``.

        Neurons (conv: channels) by spine value, synapses (conv: channel-to-channel
        connections, only with ``conv_synapses``) by ``M`` (or ``unit(M) * |w|``, see
        ``cfg.synapse_score``), each with its kind's constants.

        Args:
            weights: the model's masked weights per weight layer (``model.masked_weights()``:
                ``(N, F)`` or ``(C_out, C_in, kH, kW)``); needed by ``synapse_score="bcm-weight"``.

        Raises:
            ValueError: ``synapse_score="bcm-weight"`` without ``weights``.

        Returns:
            Per layer name: neurons and synapses alive (effective: a removed neuron takes
            its synapses with it).
        """
        cfg = self.cfg
        before_stop = cfg.stop_epoch is None or epoch < cfg.stop_epoch or self.budget_unmet
        if epoch >= cfg.e0 and not self.frozen and before_stop:
            for l in self.layers:
                k_neuron, k_synapse = self._constants(l)
                conv = self.specs[l].kind == "conv"
                if cfg.prune_neurons and (not conv or cfg.conv_channels):
                    spine = spine_value(self.M[l], self.A[l])
                    before = self.neuron_alive[l]
                    alive = survival_update(self.R_neuron[l], spine, before, epoch, k_neuron, cfg)
                    if before.any() and not alive.any():  # a layer keeps its most-surviving unit
                        alive[torch.argmax(torch.where(before, self.R_neuron[l], -torch.inf))] = True
                    self.neuron_alive[l] = alive
                if cfg.prune_synapses and (not conv or cfg.conv_synapses):
                    eff = self.synapse_alive[l] & self.neuron_alive[l][:, None]
                    new_eff = survival_update(self.R_synapse[l], self._synapse_score(l, weights), eff, epoch,
                                              k_synapse, cfg)
                    self.synapse_alive[l] = self.synapse_alive[l] & (new_eff | ~eff)
                if l in self.Time:  # the survival rule with its own constants (sec. 7.2), or a target (7.5)
                    eff = self.time_alive[l] & self.neuron_alive[l][:, None]
                    if cfg.timestep_target is not None:
                        frac = cubic_fraction(cfg.timestep_target, epoch, cfg.e0, cfg.stop_epoch)
                        new_eff = silence_lowest(self.Time[l], eff, frac)
                    else:
                        new_eff = survival_update(self.R_time[l], self.Time[l], eff, epoch, cfg.timestep, cfg)
                    self.time_alive[l] = self.time_alive[l] & (new_eff | ~eff)
            if cfg.reset_each_epoch:
                for l in self.layers:
                    self.M[l].zero_()
                    self.A[l].zero_()
                    if l in self.Time:
                        self.Time[l].zero_()
        return self.summary()

    def _synapse_score(self, l: int, weights) -> torch.Tensor:
        """Layer ``l``'s synapse importance ``(N, F)``: ``M``, ``unit(M) * |w|`` or ``|w|`` (conv:
        ``|w|`` summed over the kernel, one value per channel-to-channel connection)."""
        if self.cfg.synapse_score == "bcm":
            return self.M[l]
        if weights is None:
            raise ValueError(f'synapse_score="{self.cfg.synapse_score}" needs the model\'s weights in end_epoch()')
        w = weights[l].detach().abs().double().cpu()
        if w.dim() == 4:
            w = w.sum(dim=(2, 3))
        w = w.reshape(self.M[l].shape)
        if self.cfg.synapse_score == "weight":
            return w
        return unit_scale(self.M[l], self.cfg.percentiles) * w

    def mask(self, l: int) -> Optional[torch.Tensor]:
        """Effective unit mask of layer ``l`` ``(N, F)``, or None if the layer is not prunable."""
        if l not in self.synapse_alive:
            return None
        return self.synapse_alive[l] & self.neuron_alive[l][:, None]

    def weight_mask(self, l: int, shape) -> torch.Tensor:
        """:meth:`mask` broadcast to a weight of ``shape`` (conv: over the kernel)."""
        m = self.mask(l)
        if len(shape) == 4:
            return m[:, :, None, None].expand(*shape)
        return m

    @torch.no_grad()
    def apply(self, model, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
        """Write the masks into ``model``, zero pruned weights and their optimizer state
        (Adam's moments, SGD's momentum), so that a removed synapse stays exactly zero."""
        for l in self.layers:
            m = model.masks[l]
            m.copy_(m & self.weight_mask(l, m.shape).to(m.device))
        for l, alive in self.time_alive.items():
            model.set_time_mask(l, alive)
        model.apply_masks()
        if optimizer is not None:
            for layer, m in zip(model.layers, model.masks):
                st = optimizer.state.get(layer.weight, {})
                for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                    if key in st and st[key] is not None:
                        st[key].mul_(m)

    @torch.no_grad()
    def compact(self, kept: List[np.ndarray]) -> None:
        """Follow a physical compaction: keep only the units ``kept[l]`` of each layer
        (see ``train/compact.py``), on both sides of every per-layer tensor."""
        specs = []
        for l, sp in enumerate(self.specs):
            n_in = sp.n_in if l == 0 else len(kept[l - 1])
            specs.append(LayerSpec(sp.name, sp.kind, len(kept[l]), n_in, sp.in_block))
        for l in self.layers:
            rows = torch.as_tensor(kept[l])
            units_in = np.arange(self.specs[l].n_in) if l == 0 else kept[l - 1]
            cols = torch.as_tensor(input_columns(units_in, self.specs[l].in_block))
            for name in ("M", "R_synapse", "synapse_alive"):
                t = getattr(self, name)
                t[l] = t[l].index_select(0, rows).index_select(1, cols)
            for name in ("theta", "A", "R_neuron", "neuron_alive", "Time", "R_time", "time_alive"):
                t = getattr(self, name)
                if l in t:
                    t[l] = t[l].index_select(0, rows)
        self.specs = specs

    def summary(self) -> Dict[str, dict]:
        out = {}
        for l in self.layers:
            out[self.specs[l].name] = {
                "neurons_alive": int(self.neuron_alive[l].sum()),
                "neurons": int(self.neuron_alive[l].numel()),
                "synapses_alive": int(self.mask(l).sum()),
                "synapses": int(self.synapse_alive[l].numel()),
            }
        return out

    def state_dict(self) -> dict:
        """Everything needed to resume: config, layer specs, batch count and every per-layer tensor."""
        tensors = {}
        for name in ("M", "theta", "A", "R_neuron", "R_synapse", "neuron_alive", "synapse_alive",
                     "Time", "R_time", "time_alive"):
            tensors[name] = {str(l): t.clone() for l, t in getattr(self, name).items()}
        return {"cfg": self.cfg.to_dict(), "specs": [asdict(s) for s in self.specs], "k": self.k, "tensors": tensors,
                "c_boost": {str(l): v for l, v in self.c_boost.items()}, "frozen": self.frozen,
                "budget_unmet": self.budget_unmet}

    @classmethod
    def from_state_dict(cls, d: dict) -> "DPAPState":
        specs = [LayerSpec(**s) for s in d["specs"]] if "specs" in d else d["sizes"]
        st = cls(specs, DPAPConfig.from_dict(d["cfg"]))
        st.k = int(d["k"])
        st.c_boost.update({int(l): float(v) for l, v in d.get("c_boost", {}).items()})
        st.frozen = bool(d.get("frozen", False))
        st.budget_unmet = bool(d.get("budget_unmet", False))
        for name, per_layer in d["tensors"].items():
            getattr(st, name).update({int(l): t.clone() for l, t in per_layer.items()})
        return st
