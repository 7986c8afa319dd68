"""Export targets, registered by name (installed as ``dpap_deploy.export``).

A target is a function ``export(ir, out_dir, **options) -> ExportResult`` registered
with :func:`register_target`; ``dpap-export --target NAME`` picks it. Adding a target is
one module and one decorator line; ``tests/test_targets.py`` runs every registered target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from dpap_deploy.errors import UnknownTargetError
from dpap_deploy.registry import Registry


@dataclass
class ExportResult:
    """What an export target produced and measured.

    Attributes:
        target: the target's registered name.
        files: written files, each ``{"path", "verified_by"}``.
        synapses_per_layer: surviving synapses per layer, counted in the exported network itself.
        counts: output spike counts ``(N, C)`` from running the exported network, if it was run.
        seconds: wall time of building and running, s: ``{"build", "run"}``.
        extra: target-specific facts for the report.
        network: the network as exported (e.g. the fixed-point IR Lava ran), for the mapper;
            None when the target exports the float network as it is.
        output_spikes: the output population's spikes ``(T, N, C)``, if the target ran them.
        hidden_spikes: per hidden layer the spikes ``(T, n, n_l)`` of the first ``n`` test samples
            (``probe_samples`` asked of the exporter; conv neurons in torch's ``(C, H, W)`` order), if
            the target recorded them in its run (``loihi-sim``); the ``measure`` stage uses them.
    """

    target: str
    files: List[dict] = field(default_factory=list)
    synapses_per_layer: Dict[str, int] = field(default_factory=dict)
    counts: Optional[np.ndarray] = None
    seconds: Dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    network: Optional[object] = None
    output_spikes: Optional[np.ndarray] = None
    hidden_spikes: Optional[list] = None


Exporter = Callable[..., ExportResult]


def _load_builtin() -> None:
    from dpap_deploy.export import lava_sim  # noqa: F401  (registers "loihi-sim")
    from dpap_deploy.export import loihi2_hw  # noqa: F401  (registers "loihi2")
    from dpap_deploy.export import netx  # noqa: F401  (registers "netx")
    from dpap_deploy.export import nir_export  # noqa: F401  (registers "nir")
    from dpap_deploy.export import onnx_export  # noqa: F401  (registers "onnx")


#: every export target by its CLI name (``--target NAME``)
TARGETS: Registry[Exporter] = Registry("target", loader=_load_builtin, error=UnknownTargetError)


def register_target(name: str, takes: str = "snn", help: str = "") -> Callable[[Exporter], Exporter]:
    """Decorator registering an exporter under its CLI name.

    Args:
        takes: ``"snn"`` (spiking IR; inputs ``(T, N, F)`` spikes) or ``"ann"`` (ANN IR;
            inputs ``(N, F)``); kept on the function as ``fn.takes``.
        help: one line for ``--help`` (default: the docstring's first line).
    """

    def deco(fn: Exporter) -> Exporter:
        fn.takes = takes
        return TARGETS.register(name, fn, help=help)

    return deco


def check_layers(ir, target: str, kinds, activations, what: Optional[str] = None, hint: str = "",
                 features=()) -> None:
    """Raise :class:`UnsupportedLayerError` naming every node of ``ir`` whose kind (or, for a
    weight layer, activation) target ``target`` cannot export (``what``: how the message
    describes the target). ``kinds`` lists the weight-layer and shape-node kinds it takes
    (``fc``, ``conv``, ``flatten``, ``avgpool``); ``features`` the optional layer features it
    realises (``dpap_deploy.ir.FEATURES``: ``bias``, ``delay``, ``groups``, ``dilation``, ``input_bias``,
    ``recurrent``, ``if``, ``li``; :meth:`~dpap_deploy.ir.NetworkIR.require_features`): a layer using
    any other is refused by name."""
    from dpap_deploy.errors import UnsupportedLayerError

    bad = [f"{n.name} ({n.kind}{', ' + n.activation if hasattr(n, 'activation') else ''})" for n in ir.nodes
           if n.kind not in kinds or (hasattr(n, "activation") and n.activation not in activations)]
    if bad:
        what = what or f"supports layer kinds {tuple(kinds)} with activations {tuple(activations)}"
        raise UnsupportedLayerError(f"target {target} {what}; unsupported: {', '.join(bad)}{hint}")
    ir.require_features(tuple(features), f"target {target}")
    check_time_masks(ir, target)
    check_input_encoding(ir, target)


#: targets that realise current encoding: layer 0's ``W x`` as a per-sample bias (``export/gate/bias_lif.py``);
#: ``loihi2`` writes and verifies through ``loihi-sim`` (its hardware run refuses it, ``lava_sim.run``)
CURRENT_TARGETS = ("loihi-sim", "loihi2", "emulator")


def check_input_encoding(ir, target: str) -> None:
    """Refuse a current-encoded network (``ir.input_encoding == "current"``) for targets that cannot
    set the first population's bias per sample.

    With current encoding the first layer's neurons integrate the host's ``W x`` of the analog
    sample directly (no synaptic current), which Lava realises as the population's bias, changed
    per sample by ``loihi-sim``'s ``BiasScheduleLIF`` (:data:`CURRENT_TARGETS`). lava-dl netx has one
    static bias per layer and spike input, NIR's ``CubaLIF`` a synaptic current: exporting the
    layer there would silently change what it computes, so it is an
    :class:`UnsupportedLayerError` naming the layer.
    """
    from dpap_deploy.errors import UnsupportedLayerError

    if target in CURRENT_TARGETS or getattr(ir, "input_encoding", "spikes") != "current":
        return
    raise UnsupportedLayerError(
        f'target {target}: layer "{ir.layers[0].name}" is driven by current encoding (the analog input as a constant '
        "input current into its neurons), which only loihi-sim realises, as a per-sample bias set by the host; "
        "use --target loihi-sim or --encoding rate")


#: targets that realise per-neuron, per-step timestep masks (in Lava's simulator a ``GatedLIFReset``
#: population for "hold" layers, a ``SpikeGate`` process after the population for "drop" layers)
GATED_TARGETS = ("loihi-sim", "emulator")


def holds(layer) -> bool:
    """How ``layer``'s timestep mask silences a neuron: True for ``time_gate == "hold"`` (threshold test
    off at a masked step: no spike, no reset), False for ``"drop"`` (spike dropped after the update,
    the neuron resets); docs/dpap.md sec. 7.4. A layer object without the field is ``"drop"``.

    Raises:
        ExportValidationError: any other ``time_gate`` (e.g. set on a layer after construction),
            naming the layer.
    """
    from dpap_deploy.errors import ExportValidationError
    from dpap_deploy.ir import TIME_GATES

    gate = getattr(layer, "time_gate", "drop")
    if gate not in TIME_GATES:
        raise ExportValidationError(f'layer "{layer.name}": time_gate {gate!r} is not one of {TIME_GATES}')
    return gate == "hold"


def check_time_masks(ir, target: str) -> None:
    """Refuse timestep masks that silence a neuron at chosen steps inside the deployed window.

    Spatio-temporal DPAP (spec sec. 4b) silences unit ``i`` at step ``t`` (``"hold"``: threshold test
    off, no spike, no reset; ``"drop"``: spike dropped after the update; docs/dpap.md sec. 7.4). Steps
    silenced for every neuron at the end of the window are deployed as a shorter window (``ir.time_steps``,
    fewer steps per sample) by every target. Anything else needs a per-neuron, per-step gate:
    ``loihi-sim`` and the emulator (:data:`GATED_TARGETS`) add one
    (``export/gate/gated_lif.py``, ``export/gate/spike_gate.py``); Loihi's LIF neuron on a chip (``loihi2``), lava-dl's CUBA blocks
    (``netx``) and NIR's ``CubaLIF`` (``nir``) have none, so for them it is an
    :class:`UnsupportedLayerError` naming the layers, not a silent change.
    """
    from dpap_deploy.errors import UnsupportedLayerError

    if target in GATED_TARGETS:
        return
    inside = ir.silenced_inside_window() if hasattr(ir, "silenced_inside_window") else []
    if inside:
        raise UnsupportedLayerError(
            f"target {target} cannot silence neurons at chosen time steps inside the T = {ir.time_steps} window "
            f"(Loihi's LIF has no per-neuron, per-step gate); timestep pruning did that in {'; '.join(inside)}. "
            "Only steps pruned for every neuron at the end of the window deploy (as a shorter window)")


def targets() -> List[str]:
    """Names of all registered targets."""
    return TARGETS.names()


def get_target(name: str) -> Exporter:
    """The exporter registered as ``name``.

    Raises:
        UnknownTargetError: no such target; the message lists the known ones.
    """
    return TARGETS.get(name)
