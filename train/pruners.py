"""Pruning methods, registered by name (``--pruner NAME``): what a training run asks of them.

* ``dpap``: developmental plasticity-inspired adaptive pruning (``train/dpap.py``, ``docs/dpap.md``):
  scores gathered after every batch, the survival rule after every epoch from ``e0``.
* ``magnitude``: gradual global magnitude pruning (``torch.nn.utils.prune.global_unstructured``,
  L1) of the hidden layers to a final sparsity of their dense synapses, Zhu & Gupta's cubic
  schedule from ``e0`` to the start
  of a recovery tail (the last quarter of the epochs, as DPAP's run-length schedule; Zhu & Gupta
  also stop pruning before training ends: "To prune, or not to prune", arXiv 1710.01878, sec. 3):
  the peer a user would pick.
* ``dpap-magnitude``: DPAP's neuron/channel rule with synapses by gradual global magnitude pruning
  to a sparsity of the dense count (ours, docs/dpap.md sec. 6.9).
* ``dpap-synops``: the same with synapses ranked by ``|w|`` over the fourth root of their layer's
  synaptic operations per synapse (ours, docs/dpap.md sec. 6.10).
* ``dense``: no pruning (the baseline).

A pruner sees the model after each optimiser step (:meth:`Pruner.observe`) and after each epoch
(:meth:`Pruner.end_epoch`), follows compaction (:meth:`Pruner.compacted`) and saves its state with
the checkpoint (:meth:`Pruner.state_dict`). Adding a method is one class registered in
:data:`PRUNERS`.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import torch

from dpap_deploy.registry import Registry
from dpap_deploy.train.dpap import DPAPConfig, DPAPState, cubic_fraction


class Pruner:
    """Base of every pruning method: every hook does nothing.

    Attributes:
        name: the registered name (saved in checkpoints).
        compacts: the network is compacted after each epoch (units may have been removed).
        state: DPAP's state, for the budget loop and the saved model (None for other methods).
    """

    name = "base"
    compacts = False
    #: the method prunes the hidden synapses to ``target_sparsity`` of the dense count
    takes_target = False
    #: the method can regrow synapses (``DPAPConfig.regrow``): it ranks them globally by a score
    regrows = False
    state: Optional[DPAPState] = None

    def __init__(self, dpap: DPAPConfig, target_sparsity: float = 0.0):
        self.dpap = dpap
        self.target_sparsity = float(target_sparsity)

    def start(self, model, resume: Optional[dict] = None) -> None:
        """Begin with ``model`` (fresh), or with the state a checkpoint saved (``resume``)."""

    def observe(self, records, reduce: Optional[Callable] = None) -> None:
        """One batch's ``(pre, post)`` per weight layer (after the optimiser step)."""

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        """Prune after epoch ``epoch`` (0-based) of ``epochs``."""

    def compacted(self, kept: List[np.ndarray]) -> None:
        """Follow a compaction that kept units ``kept[l]`` of each layer."""

    def state_dict(self) -> Optional[dict]:
        return None

    @property
    def dense_gradient(self) -> bool:
        """Train with the gradients of pruned weights (:class:`~dpap_deploy.train.models.MaskDenseGradient`):
        what regrowth ranks by; the training loop sets the model's flag from it."""
        return self.regrows and self.dpap.regrow > 0


#: every pruning method by name (the built-in ones are defined below)
PRUNERS: Registry[type] = Registry("pruner")


@PRUNERS.register("dense", help="no pruning (the baseline)")
class DensePruner(Pruner):
    name = "dense"


@PRUNERS.register("dpap", help="developmental plasticity-inspired adaptive pruning (Han et al., TPAMI 2025)")
class DPAPPruner(Pruner):
    name = "dpap"
    compacts = True

    def start(self, model, resume: Optional[dict] = None) -> None:
        self.state = DPAPState.from_state_dict(resume) if resume else DPAPState(model.specs(), self.dpap)

    def observe(self, records, reduce=None) -> None:
        self.state.observe(records, reduce)

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        weights = None if self.dpap.synapse_score == "bcm" else [w.detach() for w in model.masked_weights()]
        self.state.end_epoch(epoch, weights)
        self.state.apply(model, optimizer)

    def compacted(self, kept) -> None:
        self.state.compact(kept)

    def state_dict(self) -> Optional[dict]:
        return self.state.state_dict()


@PRUNERS.register("magnitude", help="gradual global L1 magnitude pruning to --target-sparsity (cubic schedule)")
class MagnitudePruner(Pruner):
    name = "magnitude"
    compacts = True
    takes_target = True
    regrows = True

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        hidden = list(range(len(model.layers) - 1))
        magnitude_step(model, hidden, self.target_sparsity, epoch, self.dpap.e0, epochs,
                       dense_total=dense_count(model, hidden), regrow=self.dpap.regrow,
                       grow_scores=momentum_scores(model, optimizer, hidden) if self.dense_gradient else None)


@PRUNERS.register("dpap-magnitude", help="ours: DPAP's neuron/channel rule (activity) with gradual global magnitude "
                  "pruning of synapses to --target-sparsity of the dense count")
class DPAPMagnitudePruner(DPAPPruner):
    """DPAP removes neurons and conv channels by their spine value and spiking trace (paper sec.
    3.3, eq. 7; docs/dpap.md sec. 6.1, 6.3); the synapses are pruned by global magnitude
    (:func:`magnitude_step`, the same cubic schedule and recovery tail as ``magnitude``) to
    ``target_sparsity`` of the *dense* network's synapses, so the neurons DPAP removes count toward
    the target. Beyond the paper (docs/dpap.md sec. 6.9): DPAP's synapse rule ranks synapses by
    co-activity (BCM), which keeps the synapses that carry the most spikes; magnitude ranking keeps
    the strong ones, and DPAP's neuron rule removes the quiet neurons magnitude pruning keeps."""

    name = "dpap-magnitude"
    takes_target = True
    regrows = True

    def start(self, model, resume: Optional[dict] = None) -> None:
        from dataclasses import replace

        self.dpap = replace(self.dpap, prune_synapses=False, conv_synapses=False)
        super().start(model, resume)

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        hidden = list(range(len(model.layers) - 1))
        # read before DPAP's step zeroes the moments of pruned weights
        momentum = momentum_scores(model, optimizer, hidden) if self.dense_gradient else None
        super().end_epoch(epoch, model, optimizer, epochs)
        magnitude_step(model, hidden, self.target_sparsity, epoch, self.dpap.e0, epochs,
                       dense_total=dense_count(model, hidden), scores=self.synapse_scores(model, hidden),
                       regrow=self.dpap.regrow, grow_scores=self.grow_scores(model, hidden, momentum))

    def synapse_scores(self, model, hidden: List[int]) -> Optional[dict]:
        """What ranks the synapses of ``hidden`` for :func:`magnitude_step`: None is ``|w|``."""
        return None

    def grow_scores(self, model, hidden: List[int], momentum: Optional[dict]) -> Optional[dict]:
        """What ranks pruned synapses for regrowth: ``|m|`` (:func:`momentum_scores`) as it is."""
        return momentum


@PRUNERS.register("dpap-synops", help="ours: DPAP's neuron/channel rule with synapses ranked by |w| over the fourth "
                  "root of their layer's synaptic operations per synapse, to --target-sparsity of the dense count")
class DPAPSynopsPruner(DPAPMagnitudePruner):
    """:class:`DPAPMagnitudePruner` with a cost-aware synapse ranking (docs/dpap.md sec. 6.10):
    each synapse of layer ``l`` is scored ``|w| / c_l ** p`` (``p``: ``--synops-cost-power``, default
    0.25), ``c_l`` the synaptic operations one
    surviving synapse of the layer costs per sample (its presynaptic spikes over the epoch, weighted
    by fan-out: :func:`per_operation_scores`). Magnitude ranking spends the synapse budget where
    weights are large, mostly on the input layer, whose units spike most; this ranking moves it to
    the layers whose spikes are rarer. Within a layer it ranks by ``|w|``: a cost per *unit*
    (``|w_ij| / sqrt(n_j)``) kept the dim pixels' synapses and lost the bright ones' (87.5 %
    against 98.3 % on the digits MLP, seed 0, docs/dpap.md sec. 6.10). The epoch's counts so far are
    saved with DPAP's state, so a run resumed mid-epoch ranks as the uninterrupted one."""

    name = "dpap-synops"

    def start(self, model, resume: Optional[dict] = None) -> None:
        super().start(model, resume)
        saved = (resume or {}).get("synops_events")
        # per layer: presynaptic events summed over the epoch so far, and the samples they came from
        self._events: Optional[List[torch.Tensor]] = [t.clone() for t in saved["events"]] if saved else None
        self._samples = float(saved["samples"]) if saved else 0.0
        self._input_current = bool(getattr(model, "input_current", False))

    def state_dict(self) -> Optional[dict]:
        d = super().state_dict()
        if self._events is not None:
            d["synops_events"] = {"events": [t.clone() for t in self._events], "samples": self._samples}
        return d

    def observe(self, records, reduce=None) -> None:
        super().observe(records, reduce)
        events = [presynaptic_events(pre) for pre, _ in records]
        batch = [torch.tensor([float(records[0][0].shape[1])], dtype=torch.float64)]
        if reduce is not None:
            *events, batch[0] = reduce(events + batch)
        self._events = events if self._events is None else [a + b for a, b in zip(self._events, events)]
        self._samples += float(batch[0])

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        super().end_epoch(epoch, model, optimizer, epochs)
        self._events, self._samples = None, 0.0  # the next epoch counts afresh

    def synapse_scores(self, model, hidden: List[int]) -> Optional[dict]:
        """:func:`per_operation_scores` from this epoch's presynaptic events per sample (None, i.e.
        ``|w|``, when no batch was observed)."""
        if self._events is None:
            return None
        per_sample = [e / max(1.0, self._samples) for e in self._events]
        return per_operation_scores(model, hidden, per_sample, self.dpap.synops_cost_power,
                                    skip_first=self._input_current)

    def grow_scores(self, model, hidden: List[int], momentum: Optional[dict]) -> Optional[dict]:
        """``|m|`` times the same per-layer cost factor as the synapse ranking (:func:`cost_factors`),
        so regrowth does not hand back to the busiest layers what the ranking took from them."""
        if momentum is None or self._events is None:
            return momentum
        per_sample = [e / max(1.0, self._samples) for e in self._events]
        factors = cost_factors(model, hidden, per_sample, self.dpap.synops_cost_power, skip_first=self._input_current)
        return {key: v * factors[l] for l, (key, v) in zip(hidden, momentum.items())}


def presynaptic_events(pre: torch.Tensor) -> torch.Tensor:
    """Events (nonzero entries: spikes) per presynaptic unit of one batch, float64 on the CPU:
    ``(T, B, F)`` gives ``(F,)``, ``(T, B, C, H, W)`` gives ``(C,)`` (summed over positions)."""
    nz = (pre.detach() != 0).to(torch.float64)
    dims = (0, 1, 3, 4) if nz.dim() == 5 else (0, 1)
    return nz.sum(dim=dims).cpu()


def per_operation_scores(model, layers: List[int], events: List[torch.Tensor], power: float,
                         skip_first: bool = False) -> dict:
    """Importance per synaptic operation of every weight of ``layers`` (:class:`DPAPSynopsPruner`):
    ``|w| / c_l ** p`` with ``p = power`` (``DPAPConfig.synops_cost_power``, ``--synops-cost-power``),
    where ``c_l`` is layer ``l``'s synaptic operations per surviving synapse per sample,
    ``sum_j n_j fo_j / K_l`` (``K_l`` its surviving synapses, ``n_j`` = ``events[l][j]``,
    presynaptic unit ``j``'s events per sample, ``(n_in,)`` or ``(C_in,)``; ``fo_j``
    its surviving fan-out, :func:`~dpap_deploy.train.synops.fan_out`, which divides a conv's by
    ``stride**2``). The cost is the layer's, not the unit's: within a layer the ranking is by
    ``|w|``, as magnitude pruning's, and across layers a synapse of a layer whose inputs spike more
    must be stronger to stay. A weight whose presynaptic unit never spiked scores a tiny floor (it
    carried nothing and goes first); pruned weights score 0. With ``skip_first`` (analog current
    input: the host computes the first layer, no synaptic operation), layer 0 costs the mean of the
    other layers' ``c_l``.

    Returns:
        ``{(module, "weight"): scores}`` for ``torch.nn.utils.prune.global_unstructured``'s
        ``importance_scores``, each the weight's shape.
    """
    factors = cost_factors(model, layers, events, power, skip_first)
    scores = {}
    for l in layers:
        w = model.layers[l].weight.detach()
        # a tiny floor keeps a live weight above the pruned ones (0): never-spiking inputs go first
        scores[(model.layers[l], "weight")] = (w.abs() * factors[l]).clamp_min(1e-30) * model.masks[l]
    return scores


def cost_factors(model, layers: List[int], events: List[torch.Tensor], power: float,
                 skip_first: bool = False) -> dict:
    """Per layer of ``layers``, the factor :func:`per_operation_scores` multiplies ``|w|`` by:
    ``1 / c_l ** power`` where the presynaptic unit spiked, 0 where it never did, shaped to
    broadcast over the weight (``(1, F)`` or ``(1, C_in, 1, 1)``). Arguments as there."""
    from dpap_deploy.train.synops import fan_out

    fos = fan_out(model)
    cost = {}
    for l in layers:
        n, fo = events[l].to(torch.float32), fos[l].cpu()
        cost[l] = float((n * fo).sum()) / max(1.0, float(model.masks[l].sum()))  # ops / synapses
    rest = [c for l, c in cost.items() if not (skip_first and l == 0)]
    if skip_first and 0 in cost:
        cost[0] = sum(rest) / len(rest) if rest else 1.0
    factors = {}
    for l in layers:
        w = model.layers[l].weight
        shape = (1, -1, 1, 1) if w.dim() == 4 else (1, -1)
        spiked = (events[l] > 0) | (skip_first and l == 0)
        factors[l] = spiked.to(w.dtype).to(w.device).view(shape) / max(cost[l], 1e-12) ** power
    return factors


def dense_count(model, layers: List[int]) -> int:
    """Weights of ``layers`` in ``model`` at its dense widths (``model.dense_widths``, before any
    unit was removed): what ``--target-sparsity`` is a fraction of. Counting the present (compacted)
    layers instead would prune past the target once compaction removed rows."""
    dense = model.resized(model.dense_widths) if list(model.widths()) != list(model.dense_widths) else model
    return int(sum(dense.masks[l].numel() for l in layers))


#: fraction of a run's epochs, at its end, in which magnitude pruning removes nothing (the same
#: recovery tail as DPAP's run-length schedule, ``train/dpap.py: for_run_length``)
MAGNITUDE_TAIL = 0.25


def magnitude_step(model, layers: List[int], target: float, epoch: int, e0: int, epochs: int,
                   tail: float = MAGNITUDE_TAIL, dense_total: Optional[int] = None,
                   scores: Optional[dict] = None, regrow: float = 0.0, grow_scores: Optional[dict] = None) -> None:
    """Gradual global L1 magnitude pruning of ``layers`` toward ``target`` sparsity after epoch
    ``epoch`` (0-based) of ``epochs``: Zhu & Gupta's cubic schedule
    ``s(e) = target * (1 - (1 - (e - e0 + 1) / span)^3)`` reaching ``target`` after epoch
    ``e0 + span - 1``, where ``span = epochs - ceil(tail * epochs) - e0`` (at least 1), so the
    last ``ceil(tail * epochs)`` epochs train the final structure. ``s`` is a fraction of
    ``dense_total`` (the dense network's synapses, :func:`dense_count`: units removed by compaction or
    another rule count as pruned); None means the layers' present weights (a model never compacted).
    ``scores`` (``{(module, "weight"): tensor}``, :func:`per_operation_scores`) ranks the weights
    instead of ``|w|``; pruned weights must score 0 and live ones above 0.

    With ``regrow`` (``alpha_0``, ``DPAPConfig.regrow``) and ``grow_scores`` (:func:`momentum_scores`),
    each pruning epoch then exchanges :func:`regrow_fraction` of the live weights (:func:`exchange`):
    the sparsity stays the schedule's, the structure moves to where the gradient asks for synapses."""
    import math

    if epoch < e0:
        return
    stop = epochs - int(math.ceil(tail * epochs))
    frac = cubic_fraction(target, epoch, e0, stop)
    total = sum(model.masks[l].numel() for l in layers)
    amount = total - int(round((1.0 - frac) * (total if dense_total is None else dense_total)))
    if amount > 0:
        _prune_lowest(model, layers, amount, scores)
    alpha = regrow_fraction(regrow, epoch, e0, stop)
    if alpha > 0 and grow_scores is not None:
        exchange(model, layers, alpha, grow_scores, scores)


def _prune_lowest(model, layers: List[int], amount: int, scores: Optional[dict]) -> None:
    """Remove the ``amount`` lowest-ranked live weights of ``layers`` (global over the layers;
    ``scores`` as in :func:`magnitude_step`, None: ``|w|``) and write the masks."""
    import torch.nn.utils.prune as prune

    params = [(model.layers[l], "weight") for l in layers]
    with torch.no_grad():
        for l in layers:  # already-pruned weights are exactly zero
            model.layers[l].weight.mul_(model.masks[l])
        if scores is None:  # |w|, with a floor that keeps a live weight at 0 (just regrown) above the pruned ones
            scores = {(model.layers[l], "weight"): model.layers[l].weight.abs().clamp_min(1e-30) * model.masks[l]
                      for l in layers}
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount, importance_scores=scores)
    with torch.no_grad():
        for l in layers:
            layer = model.layers[l]
            model.masks[l].copy_(model.masks[l] & layer.weight_mask.bool())
            prune.remove(layer, "weight")
    model.apply_masks()


def regrow_fraction(alpha: float, epoch: int, e0: int, stop: int) -> float:
    """Fraction of the live weights exchanged after epoch ``epoch`` (0-based): RigL's cosine decay
    (Evci et al. 2020, arXiv 1911.11134, sec. 3, ``alpha/2 * (1 + cos(pi t / T_end))``) over the
    pruning epochs, ``alpha * (1 + cos(pi (epoch - e0) / (stop - e0))) / 2`` for ``e0 <= epoch < stop``,
    0 before ``e0`` and in the recovery tail (``epoch >= stop``), so the last structure trains alone."""
    import math

    if alpha <= 0.0 or epoch < e0 or epoch >= stop:
        return 0.0
    return alpha * 0.5 * (1.0 + math.cos(math.pi * (epoch - e0) / max(1, stop - e0)))


def momentum_scores(model, optimizer, layers: List[int]) -> Optional[dict]:
    """Regrowth scores of ``layers``: ``|m|``, Adam's first moment (``exp_avg``) of each weight, an
    average of its recent gradients, pruned weights included when the model trains with
    ``dense_gradient`` (:class:`~dpap_deploy.train.models.MaskDenseGradient`): sparse momentum's
    regrowth criterion (Dettmers & Zettlemoyer 2019, arXiv 1907.04840, sec. 3). None before the
    first optimiser step. Read it before anything zeroes the moments of pruned weights
    (:meth:`~dpap_deploy.train.dpap.DPAPState.apply` does)."""
    out = {}
    for l in layers:
        st = optimizer.state.get(model.layers[l].weight) or {}
        m = st.get("exp_avg", st.get("momentum_buffer"))
        if m is None:
            return None
        out[(model.layers[l], "weight")] = m.detach().abs().clone()
    return out


def _live_units(model, layers: List[int]) -> dict:
    """Per layer of ``layers``, bool of the weight's shape: both ends of the synapse are units still
    in the network (the postsynaptic unit has a live input synapse; the presynaptic one is an input
    or has one). A synapse between such units may regrow; one onto a removed unit may not."""
    has_in = [model.unit_connectivity(l).any(axis=1) for l in range(len(model.layers))]
    specs = model.specs()
    out = {}
    for l in layers:
        m = model.masks[l]
        post = torch.as_tensor(has_in[l], device=m.device)
        pre_units = np.ones(specs[l].n_in, dtype=bool) if l == 0 else has_in[l - 1]
        pre = torch.as_tensor(np.repeat(pre_units, specs[l].in_block), device=m.device)
        if m.dim() == 4:  # conv: (C_out, C_in, kH, kW)
            out[l] = (post[:, None] & pre[None, :])[:, :, None, None].expand_as(m)
        else:
            out[l] = post[:, None] & pre[None, :]
    return out


@torch.no_grad()
def exchange(model, layers: List[int], fraction: float, grow_scores: dict, drop_scores: Optional[dict] = None) -> int:
    """Drop the ``k = round(fraction * live)`` lowest-ranked live weights of ``layers`` (``drop_scores``
    as :func:`magnitude_step`'s ``scores``; None: ``|w|``) and regrow the ``k`` pruned ones between
    units still in the network (:func:`_live_units`) that ``grow_scores`` ranks highest (global over
    the layers): RigL's drop-and-grow step (Evci et al. 2020, sec. 3), with sparse momentum's score.
    A regrown weight starts at 0, as in RigL, and the ones just dropped cannot regrow in the same step.
    Fewer are exchanged when fewer candidates score above 0 (none: nothing changes).

    Returns:
        the number of synapses exchanged.
    """
    live = [model.masks[l] for l in layers]
    n_live = int(sum(int(m.sum()) for m in live))
    units = _live_units(model, layers)
    grow = torch.cat([(grow_scores[(model.layers[l], "weight")].to(model.masks[l].device).float()
                       * (units[l] & ~model.masks[l])).reshape(-1) for l in layers])
    k = min(int(round(fraction * n_live)), int((grow > 0).sum()))
    if k <= 0:
        return 0
    chosen = torch.topk(grow, k).indices
    if drop_scores is not None:  # scores computed before this epoch's pruning: pruned weights must score 0
        drop_scores = {(model.layers[l], "weight"): drop_scores[(model.layers[l], "weight")] * model.masks[l]
                       for l in layers}
    total = sum(model.masks[l].numel() for l in layers)
    _prune_lowest(model, layers, total - n_live + k, drop_scores)
    offsets = np.cumsum([0] + [model.masks[l].numel() for l in layers])
    for i, l in enumerate(layers):
        idx = chosen[(chosen >= int(offsets[i])) & (chosen < int(offsets[i + 1]))] - int(offsets[i])
        mask, weight = model.masks[l].view(-1), model.layers[l].weight.view(-1)
        mask[idx] = True
        weight[idx] = 0.0
    return k


def make_pruner(name: str, dpap: DPAPConfig, target_sparsity: float = 0.0) -> Pruner:
    """A new pruner of method ``name``.

    Raises:
        UnknownNameError: no such method (lists the known ones).
    """
    return PRUNERS.get(name)(dpap, target_sparsity)
