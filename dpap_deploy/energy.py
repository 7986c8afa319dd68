"""Energy accounting of a (pruned) SNN: the paper's proxy and measured synaptic operations.

Paper (Han et al., TPAMI 2025, eqs. 14-15): a dense SNN costs ``E = FLOPs * E_AC * T``, the
pruned one ``E_p = (1 - rho_w) * FLOPs * E_AC * (1 - rho_t) * T``, so the relative energy is
``(1 - rho_w) * (1 - rho_t)`` with ``rho_w`` the weight sparsity and ``rho_t`` the timestep
sparsity. A neuromorphic chip spends energy per synaptic operation instead: one per spike per
surviving synapse it reaches (spike x fan-out), which is what :func:`synops_per_sample`
counts, from the spikes of Norse or of Lava, on the exported network's connectivity (a conv
layer unrolled, average pooling folded as Lava runs it).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from dpap_deploy.ir import NetworkIR


def fan_out(ir: NetworkIR) -> List[np.ndarray]:
    """Per layer, the surviving synapses each presynaptic neuron reaches, ``(n_in,)`` int."""
    from dpap_deploy.mapping import surviving

    return [np.asarray(surviving(l).sum(axis=0)).ravel().astype(np.int64) for l in ir.layers]


def dense_fan_out(ir: NetworkIR) -> List[np.ndarray]:
    """Per layer, what each presynaptic neuron would reach in the unpruned layer: ``n_out`` of the
    dense shape (fc), or the dense output channels of its group (``C_out / groups``) x
    ``ceil(k / stride)**2`` positions (conv, borders ignored; a dilated kernel reaches as many positions
    at stride 1, and a dilated, strided one is refused naming the layer).

    Raises:
        UnsupportedLayerError: a convolution with both ``dilation`` and ``stride`` above 1."""
    from dpap_deploy.errors import UnsupportedLayerError

    out = []
    for l in ir.layers:
        if l.kind == "conv":
            if l.dilation > 1 and l.stride > 1:
                raise UnsupportedLayerError(f'the dense synaptic-operation count: layer "{l.name}" has dilation '
                                            f"{l.dilation} and stride {l.stride}; it counts dilated kernels at stride 1 only")
            reach = -(-l.kernel[0] // l.stride) * -(-l.kernel[1] // l.stride)
            out.append(np.full(l.n_in, l.dense_shape[0] // l.groups * reach, dtype=np.int64))
        else:
            out.append(np.full(l.n_in, l.dense_shape[0], dtype=np.int64))
    return out


def synops_per_sample(ir: NetworkIR, presynaptic: Sequence[np.ndarray], dense: bool = False) -> float:
    """Mean synaptic operations per sample: ``sum_l sum_j spikes_j * fan_out_l[j]``.

    Args:
        ir: the network (its surviving synapses).
        presynaptic: per layer the spikes arriving at it, ``(T, N, n_in)`` (or ``(T, N, C, H, W)``):
            the input for the first layer, the previous population's spikes for the others; a non-zero
            entry is one event (0/1 spikes, or a sigma-delta network's graded spikes and graded input). With
            current encoding the first layer's input is analog and ``W x`` is computed by the host
            (the population's bias): it costs no synaptic operation on the chip and is not counted.
        dense: count with :func:`dense_fan_out` (the same spikes on unpruned connectivity).

    A layer with an input bias adds its bias axon's operations: it spikes at every one of the ``T``
    steps into each neuron with a non-zero bias (``mapping.bias_connectivity``), ``T`` times that many
    per sample, with ``dense`` too (pruning leaves biases alone).
    """
    ir.require_nodes(("fc", "conv", "flatten"), "the synaptic-operation count")
    # recurrent synapses would need the population's own spikes, which ``presynaptic`` does not hold
    ir.require_features(("bias", "delay", "groups", "dilation", "input_bias", "if", "li"), "the synaptic-operation count")
    fo = dense_fan_out(ir) if dense else fan_out(ir)
    total, n = 0.0, None
    for l, (f, s) in enumerate(zip(fo, presynaptic)):
        if l == 0 and ir.input_encoding == "current":  # W x of the analog input is computed by the host
            n = np.asarray(s).shape[1]
            continue
        s = np.asarray(s)
        # events, not values: a sigma-delta layer's graded spike is one synaptic event per synapse, as a 0/1 spike
        counts = (s.reshape(s.shape[0], s.shape[1], -1) != 0).sum(axis=0, dtype=np.float64)  # (N, n_in)
        if counts.shape[1] != len(f):
            raise ValueError(f"{counts.shape[1]} presynaptic neurons for a layer with {len(f)} inputs")
        total += float((counts @ f).sum())
        n = counts.shape[0]
    from dpap_deploy.mapping import bias_connectivity

    T = np.asarray(presynaptic[0]).shape[0] if len(presynaptic) else 0
    per_sample = sum(T * b.nnz for b in map(bias_connectivity, ir.layers) if b is not None)
    return total / max(1, n or 1) + per_sample


def timestep_sparsity(ir: NetworkIR, time_steps_trained: Optional[int] = None) -> float:
    """``rho_t``: the fraction of (neuron, time step) pairs of the timestep-pruned layers that
    are silenced, over the trained window (steps cut from the window's end count as silenced
    for every neuron of every layer that has a mask). 0 without timestep pruning."""
    T = int(time_steps_trained or ir.metadata.get("time_steps_trained") or ir.time_steps)
    silenced = total = 0
    for l in ir.layers:
        if l.time_mask is None:
            continue
        m = np.zeros((l.time_mask.shape[0], T), dtype=bool)
        m[:, : ir.time_steps] = np.asarray(l.time_mask)[:, : ir.time_steps]
        per_unit = l.n_out // m.shape[0]  # a conv channel's mask holds for its H*W neurons
        silenced += int((~m).sum()) * per_unit
        total += m.size * per_unit
    return silenced / total if total else 0.0


def energy_section(ir: NetworkIR, weight_sparsity: float, norse: Optional[Sequence[np.ndarray]] = None,
                   lava: Optional[Sequence[np.ndarray]] = None,
                   norse_probe: Optional[Sequence[np.ndarray]] = None) -> dict:
    """``report.json``'s ``energy``: ``rho_w``, ``rho_t``, ``relative_energy`` (paper eqs. 14-15)
    and ``synops_per_sample`` measured from spikes (see :func:`synops_per_sample`): ``norse`` on the
    whole test split; ``lava`` on the samples Lava recorded every population for, and
    ``norse_same_samples`` (``norse_probe``) on those same samples, for a like-for-like comparison."""
    rho_t = timestep_sparsity(ir)
    out = {"rho_w": round(float(weight_sparsity), 6), "rho_t": round(rho_t, 6),
           "relative_energy": round((1.0 - weight_sparsity) * (1.0 - rho_t), 6),
           "time_steps": int(ir.time_steps),
           "time_steps_trained": int(ir.metadata.get("time_steps_trained", ir.time_steps)),
           "synops_per_sample": {}}
    if norse is not None:
        out["synops_per_sample"]["norse"] = round(synops_per_sample(ir, norse), 2)
        out["synops_per_sample"]["dense_connectivity_same_spikes"] = round(synops_per_sample(ir, norse, dense=True), 2)
    if lava is not None:
        out["synops_per_sample"]["lava"] = round(synops_per_sample(ir, lava), 2)
        out["lava_samples"] = int(np.asarray(lava[0]).shape[1])
    if norse_probe is not None:
        out["synops_per_sample"]["norse_same_samples"] = round(synops_per_sample(ir, norse_probe), 2)
    out["formula"] = "relative_energy = (1 - rho_w) * (1 - rho_t), Han et al. TPAMI 2025 eqs. 14-15"
    return out
