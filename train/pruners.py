"""Pruning methods, registered by name (``--pruner NAME``): what a training run asks of them.

* ``dpap``: developmental plasticity-inspired adaptive pruning (``train/dpap.py``, ``docs/dpap.md``):
  scores gathered after every batch, the survival rule after every epoch from ``e0``.
* ``magnitude``: gradual global magnitude pruning (``torch.nn.utils.prune.global_unstructured``,
  L1) of the hidden layers to a final sparsity of their dense synapses, Zhu & Gupta's cubic
  schedule from ``e0`` to the start
  of a recovery tail (the last quarter of the epochs, as DPAP's run-length schedule; Zhu & Gupta
  also stop pruning before training ends: "To prune, or not to prune", arXiv 1710.01878, sec. 3):
  the peer a user would pick.
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
from dpap_deploy.train.dpap import DPAPConfig, DPAPState


class Pruner:
    """Base of every pruning method: every hook does nothing.

    Attributes:
        name: the registered name (saved in checkpoints).
        compacts: the network is compacted after each epoch (units may have been removed).
        state: DPAP's state, for the budget loop and the saved model (None for other methods).
    """

    name = "base"
    compacts = False
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

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        hidden = list(range(len(model.layers) - 1))
        magnitude_step(model, hidden, self.target_sparsity, epoch, self.dpap.e0, epochs,
                       dense_total=dense_count(model, hidden))


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

    def start(self, model, resume: Optional[dict] = None) -> None:
        from dataclasses import replace

        self.dpap = replace(self.dpap, prune_synapses=False, conv_synapses=False)
        super().start(model, resume)

    def end_epoch(self, epoch: int, model, optimizer, epochs: int) -> None:
        super().end_epoch(epoch, model, optimizer, epochs)
        hidden = list(range(len(model.layers) - 1))
        magnitude_step(model, hidden, self.target_sparsity, epoch, self.dpap.e0, epochs,
                       dense_total=dense_count(model, hidden))


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
                   tail: float = MAGNITUDE_TAIL, dense_total: Optional[int] = None) -> None:
    """Gradual global L1 magnitude pruning of ``layers`` toward ``target`` sparsity after epoch
    ``epoch`` (0-based) of ``epochs``: Zhu & Gupta's cubic schedule
    ``s(e) = target * (1 - (1 - (e - e0 + 1) / span)^3)`` reaching ``target`` after epoch
    ``e0 + span - 1``, where ``span = epochs - ceil(tail * epochs) - e0`` (at least 1), so the
    last ``ceil(tail * epochs)`` epochs train the final structure. ``s`` is a fraction of
    ``dense_total`` (the dense network's synapses, :func:`dense_count`: units removed by compaction or
    another rule count as pruned); None means the layers' present weights (a model never compacted)."""
    import math

    import torch.nn.utils.prune as prune

    if epoch < e0:
        return
    span = max(1, epochs - int(math.ceil(tail * epochs)) - e0)
    frac = target * (1.0 - (1.0 - min(1.0, (epoch - e0 + 1) / span)) ** 3)
    total = sum(model.masks[l].numel() for l in layers)
    amount = total - int(round((1.0 - frac) * (total if dense_total is None else dense_total)))
    if amount <= 0:
        return
    params = [(model.layers[l], "weight") for l in layers]
    with torch.no_grad():
        for l in layers:  # already-pruned weights are exactly zero, so L1 keeps them pruned
            model.layers[l].weight.mul_(model.masks[l])
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    with torch.no_grad():
        for l in layers:
            layer = model.layers[l]
            model.masks[l].copy_(model.masks[l] & layer.weight_mask.bool())
            prune.remove(layer, "weight")
    model.apply_masks()


def make_pruner(name: str, dpap: DPAPConfig, target_sparsity: float = 0.0) -> Pruner:
    """A new pruner of method ``name``.

    Raises:
        UnknownNameError: no such method (lists the known ones).
    """
    return PRUNERS.get(name)(dpap, target_sparsity)
