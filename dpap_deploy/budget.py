"""Hardware budgets that drive DPAP (docs/dpap.md sec. 13).

A budget is a hardware profile, possibly cut to ``N`` cores (``Profile.with_cores``) or
scaled to ``N`` chips. Before training, :meth:`Budget.check_feasible` maps the smallest
network DPAP could leave (one neuron with one synapse per hidden layer, the output layer
whole) and stops with a :class:`~dpap_deploy.errors.BudgetError` naming the binding limit if
even that does not fit. From the profile it derives per-layer targets (max neurons, max
synapses, max fan-in per neuron: the budget's neurons and synaptic memory shared between the
prunable layers in proportion to their dense size). During training, after each epoch from
``e0`` on, :meth:`Budget.step` maps the current (compacted) network with the real mapper:

* it fits: pruning stops (``DPAPState.frozen``), and the network stays as it is;
* it does not: every prunable layer above one of its targets gets a larger decay value
  ``c`` (``DPAPState.c_boost[l] += step``), up to ``c_max`` = 1.95 by default. Just below 2
  every element under the 75th percentile of its layer's scores loses survival each epoch
  while the most important quarter is still protected (``d = 2*unit - c > 0`` only where
  ``unit > c/2``); at ``c >= 2`` nothing would be protected and a layer would vanish in one
  step. So DPAP's own rule removes more of an over-budget layer in the next epochs, and
  keeps what it scores highest. The knob and how far it moved are logged.

A run-length schedule (``--dpap-schedule run-length``, docs/dpap.md sec. 11.5) stops pruning for
its recovery tail; under a budget that is not met yet it keeps pruning into the tail
(``DPAPState.budget_unmet``) and stops as soon as the network fits, so the budget is never given
up for the tail; the report's ``met_after_epoch`` shows how much of the tail was left.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np

from dpap_deploy.errors import BudgetError, MappingError
from dpap_deploy.hardware_profiles import Profile
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.mapping import map_network


@dataclass(frozen=True)
class LayerTarget:
    """What a layer may keep under the budget (``inf``: no limit from this resource)."""

    layer: str
    max_neurons: float
    max_synapses: float
    max_fan_in: float
    max_fan_out: float = math.inf

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


class Budget:
    """Feed a hardware budget back into DPAP.

    Args:
        profile: the budget (e.g. ``load_profile("loihi1").with_cores(2)``).
        step: increase of ``c`` per epoch for a layer over its target.
        c_max: ``c`` is never raised above this (keep it below 2, see the module docstring).
        pack: let small layers share cores when mapping (as the final report does).
    """

    def __init__(self, profile: Profile, step: float = 0.25, c_max: float = 1.95, pack: bool = True):
        self.profile = profile
        self.step = float(step)
        self.c_max = float(c_max)
        self.pack = pack
        self.targets: Dict[str, LayerTarget] = {}
        self.history: List[dict] = []
        self.met_epoch = None

    # -- before training -----------------------------------------------------------------
    def check_feasible(self, sizes: List[int], prunable: int) -> None:
        """Raise :class:`BudgetError` when no pruning can make the network fit.

        Args:
            sizes: ``(F, N_1, ..., N_L)`` of the dense MLP.
            prunable: how many leading layers DPAP prunes (all but the output layer).
        """
        neurons = LIFNeurons(5e-3, 10e-3, 1.0)
        layers = []
        n_in = sizes[0]
        for l, n in enumerate(sizes[1:]):
            n_out = 1 if l < prunable else n
            mask = np.zeros((n_out, n_in), dtype=bool)
            mask[:, 0] = True
            layers.append(FCLayer(f"fc{l + 1}", mask.astype(np.float32), mask, neurons, (n, n_in)))
            n_in = n_out
        ir = NetworkIR("smallest", sizes[0], 1, 1e-3, layers)
        try:
            m = map_network(ir, self.profile, pack=self.pack)
        except MappingError as exc:
            raise BudgetError(f"budget {self.profile.name} cannot be met by pruning: {exc}") from None
        if not m.fits:
            raise BudgetError(f"budget {self.profile.name} cannot be met by pruning: even one neuron per hidden "
                              f"layer breaks {'; '.join(m.violations)}")

    def derive_targets(self, ir: NetworkIR, prunable: int) -> Dict[str, LayerTarget]:
        """Per-layer targets from the budget and the dense network ``ir``."""
        p = self.profile
        cores = p.cores_available
        out = ir.layers[prunable:]
        neurons_free = cores * p.core.neurons - sum(l.n_out for l in out)
        bits_per_synapse = p.numerics.weight_bits + p.synapse_cost.index_bits
        synapses_free = cores * p.core.synaptic_memory_bits / bits_per_synapse - sum(l.synapses_dense for l in out)
        dense_neurons = sum(l.dense_shape[0] for l in ir.layers[:prunable])
        dense_synapses = sum(l.synapses_dense for l in ir.layers[:prunable])
        fan_in = min(p.core.input_axons, p.core.max_fan_in)
        fan_out = p.core.max_fan_out
        self.targets = {}
        for l in ir.layers[:prunable]:
            mn = neurons_free * l.dense_shape[0] / dense_neurons
            ms = synapses_free * l.synapses_dense / dense_synapses
            self.targets[l.name] = LayerTarget(
                l.name, math.floor(mn) if math.isfinite(mn) else math.inf,
                math.floor(ms) if math.isfinite(ms) else math.inf, fan_in, fan_out)
        return self.targets

    # -- during training ------------------------------------------------------------------
    def step_epoch(self, ir: NetworkIR, state, epoch: int) -> dict:
        """Map ``ir`` (the current network); freeze pruning if it fits, else push the layers
        over their targets. Returns the epoch's record (also kept in ``history``)."""
        try:
            m = map_network(ir, self.profile, pack=self.pack)
            fits, cores, violations = m.fits, len(m.cores), m.violations
        except MappingError as exc:  # a single neuron too large for a core: keep pruning
            fits, cores, violations = False, None, [str(exc)]
        rec = {"epoch": epoch, "fits": fits, "cores_used": cores, "violations": violations[:5], "over_target": {}}
        state.budget_unmet = not fits  # a run-length schedule keeps pruning into its tail until it fits
        if fits:
            state.frozen = True
            if self.met_epoch is None:
                self.met_epoch = epoch
        else:
            for l in state.layers:
                layer = ir.layers[l]
                t = self.targets.get(layer.name)
                if t is None:
                    continue
                fan_in = int(layer.mask.sum(1).max()) if layer.mask.size else 0
                over = [f"{what} {have} > {limit}" for what, have, limit in (
                    ("neurons", layer.n_out, t.max_neurons), ("synapses", int(layer.mask.sum()), t.max_synapses),
                    ("fan-in", fan_in, t.max_fan_in)) if have > limit]
                # a neuron's fan-out is the next layer's synapses from it: prune that layer
                if l + 1 < len(ir.layers) and (l + 1) in state.c_boost:
                    fan_out = int(ir.layers[l + 1].mask.sum(0).max()) if ir.layers[l + 1].mask.size else 0
                    if fan_out > t.max_fan_out:
                        nxt = ir.layers[l + 1].name
                        rec["over_target"].setdefault(nxt, []).append(f"fan-out of {layer.name} {fan_out} > {t.max_fan_out}")
                if over:
                    rec["over_target"].setdefault(layer.name, []).extend(over)
            if not rec["over_target"]:  # the targets are estimates: when all are met and it still
                for l in state.layers:  # does not fit, push every prunable layer
                    rec["over_target"][ir.layers[l].name] = ["network does not fit"]
            for l in state.layers:
                if ir.layers[l].name in rec["over_target"]:
                    base = max(k.c for k in state.base_constants(l))
                    state.c_boost[l] = max(state.c_boost[l], min(self.c_max - base, state.c_boost[l] + self.step))
        rec["c_boost"] = {ir.layers[l].name: state.c_boost[l] for l in state.layers}
        self.history.append(rec)
        return rec

    def state_dict(self) -> dict:
        """The targets, history and the epoch the budget was met: what a resumed run needs
        (targets come from the dense network, which a checkpoint no longer holds)."""
        return {"targets": {k: asdict(t) for k, t in self.targets.items()},
                "history": list(self.history), "met_epoch": self.met_epoch}

    def load_state_dict(self, d: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.targets = {k: LayerTarget(**t) for k, t in d["targets"].items()}
        self.history = list(d["history"])
        self.met_epoch = d["met_epoch"]

    def to_report(self) -> dict:
        """The ``budget`` section of ``report.json``."""
        last = self.history[-1] if self.history else {}
        return {
            "profile": self.profile.name,
            "cores": None if math.isinf(self.profile.cores_available) else self.profile.cores_available,
            "targets": {k: t.to_dict() for k, t in self.targets.items()},
            "met": bool(last.get("fits", False)),
            "met_after_epoch": self.met_epoch,
            "knob": f"c (decay value) of each layer over its target: + {self.step} per epoch, up to {self.c_max}",
            "c_boost": last.get("c_boost", {}),
            "history": self.history,
        }
