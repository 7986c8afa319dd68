"""A first neuro-core mapper: each layer's neurons onto cores under a profile's limits.

Every layer is split into the fewest contiguous chunks of neurons (one chunk per core)
for which every core stays within the profile's per-core limits:

* ``neurons``: neurons (compartments) on the core;
* ``input_axons``: distinct presynaptic sources with at least one surviving synapse into the core;
* ``output_axons``: distinct (neuron, destination core) routes leaving the core (a neuron of
  the output population has one route, to the host);
* ``synaptic_memory_bits``: nengo-loihi's cost model (``SynapseConfig.bits_per_axon``), per input
  axon in groups of ``group_size`` synapses costing ``n*(weight_bits + index_bits) + header``
  rounded up to ``word_bits``; dense format (every neuron of the core, no index) or sparse
  format (surviving synapses only, with an index), the cheaper one per core.

Then the chip: cores used against ``chip.cores * chip.chips``, neurons and synapses against
the chip totals. Pruned synapses cut synaptic memory and fan-in: this is where pruning pays.
Counting is vectorised over synapses with ``scipy.sparse``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import numpy as np
import scipy.sparse as sp

from dpap_deploy.errors import MappingError
from dpap_deploy.hardware_profiles import Profile
from dpap_deploy.ir import FCLayer, NetworkIR


def surviving(layer: FCLayer) -> sp.csr_matrix:
    """Surviving synapses of a layer ``(n_out, n_in)``: the mask, and a non-zero integer weight once quantised."""
    keep = layer.mask if layer.fixed is None else layer.mask & (layer.fixed.weight != 0)
    return sp.csr_matrix(keep)


def axon_memory_bits(counts: np.ndarray, bits_per_synapse: int, profile: Profile) -> np.ndarray:
    """Synaptic-memory bits per input axon for ``counts`` synapses each (nengo-loihi cost model)."""
    c = profile.synapse_cost
    counts = np.asarray(counts, dtype=np.int64)
    full, rem = counts // c.group_size, counts % c.group_size

    def group(n):
        return -(-(n * bits_per_synapse + c.group_header_bits) // c.word_bits) * c.word_bits

    return full * group(c.group_size) + np.where(rem > 0, group(rem), 0)


@dataclass
class CoreUsage:
    """One neuro core: which layer and neurons, and each resource used."""

    core: int
    layer: str
    first_neuron: int
    neurons: int
    input_axons: int
    synapses: int
    synaptic_memory_bits: int
    memory_format: str
    output_axons: int = 0


@dataclass
class Mapping:
    """The result: per-core usage, per-layer totals, and whether it fits the profile."""

    profile: Profile
    cores: List[CoreUsage]
    lower_bound: int
    violations: List[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.violations

    def to_report(self) -> dict:
        """The ``resources`` section of ``report.json``: used / limit and percent per resource."""
        lim = self.profile.core
        per_core = []
        for c in self.cores:
            entry = {"core": c.core, "layer": c.layer, "first_neuron": c.first_neuron,
                     "synapses": c.synapses, "memory_format": c.memory_format}
            for res in ("neurons", "input_axons", "output_axons", "synaptic_memory_bits"):
                used, limit = getattr(c, res), getattr(lim, res)
                entry[res] = {"used": used, "limit": limit, "percent": round(100.0 * used / limit, 2)}
            per_core.append(entry)
        per_layer = []
        for name in dict.fromkeys(c.layer for c in self.cores):
            cs = [c for c in self.cores if c.layer == name]
            per_layer.append({
                "layer": name, "cores": len(cs), "neurons": sum(c.neurons for c in cs),
                "synapses": sum(c.synapses for c in cs),
                "synaptic_memory_bits": sum(c.synaptic_memory_bits for c in cs),
                "max_input_axons_per_core": max(c.input_axons for c in cs),
                "max_output_axons_per_core": max(c.output_axons for c in cs),
            })
        return {
            "profile": self.profile.name,
            "profile_file": self.profile.source,
            "cores_used": len(self.cores),
            "cores_lower_bound": self.lower_bound,
            "cores_available": self.profile.cores_available,
            "chips": self.profile.chip.chips,
            "neurons": sum(c.neurons for c in self.cores),
            "synapses": sum(c.synapses for c in self.cores),
            "fits": self.fits,
            "violations": list(self.violations),
            "per_layer": per_layer,
            "per_core": per_core,
        }


def _core_usage(conn: sp.csr_matrix, start: int, stop: int, profile: Profile, layer: str) -> CoreUsage:
    start, stop = int(start), int(stop)
    rows = conn[start:stop]
    n = stop - start
    per_axon = np.bincount(rows.indices, minlength=conn.shape[1])
    per_axon = per_axon[per_axon > 0]
    wb = profile.numerics.weight_bits
    sparse_bits = int(axon_memory_bits(per_axon, wb + profile.synapse_cost.index_bits, profile).sum())
    dense_bits = int(axon_memory_bits(np.full(len(per_axon), n), wb, profile).sum())
    fmt, bits = ("dense", dense_bits) if dense_bits <= sparse_bits else ("sparse", sparse_bits)
    return CoreUsage(0, layer, int(start), int(n), int(len(per_axon)), int(rows.nnz), bits, fmt)


def _split(conn: sp.csr_matrix, k: int, profile: Profile, layer: str) -> List[CoreUsage]:
    bounds = np.linspace(0, conn.shape[0], k + 1).round().astype(int)
    return [_core_usage(conn, a, b, profile, layer) for a, b in zip(bounds[:-1], bounds[1:])]


def _over(c: CoreUsage, profile: Profile) -> List[str]:
    lim = profile.core
    return [r for r in ("neurons", "input_axons", "synaptic_memory_bits") if getattr(c, r) > getattr(lim, r)]


def map_network(ir: NetworkIR, profile: Profile) -> Mapping:
    """Assign every neuron of every layer to a core of ``profile``.

    Raises:
        MappingError: a single neuron alone exceeds a per-core limit (no split can help);
            the message names the layer, the resource and the limit.
    """
    lim = profile.core
    conns = [surviving(l) for l in ir.layers]
    splits: List[List[CoreUsage]] = []
    for layer, conn in zip(ir.layers, conns):
        n = layer.n_out
        k = max(1, math.ceil(n / lim.neurons))
        while True:
            cores = _split(conn, k, profile, layer.name)
            bad = [c for c in cores if _over(c, profile)]
            if not bad:
                break
            if k >= n:
                c = bad[0]
                r = _over(c, profile)[0]
                raise MappingError(
                    f'layer "{layer.name}" needs {getattr(c, r)} {r.replace("_", " ")} per core '
                    f"(neuron {c.first_neuron}); {profile.name} allows {getattr(lim, r)}"
                )
            k = min(n, max(k + 1, math.ceil(k * max(getattr(c, r) / getattr(lim, r) for c in bad for r in _over(c, profile)))))
        splits.append(cores)
    # output axons: one route per (neuron, destination core with a synapse from it)
    for i, cores in enumerate(splits):
        if i + 1 < len(splits):
            nxt = conns[i + 1]
            dest = np.zeros((len(splits[i + 1]), nxt.shape[1]), dtype=bool)
            for j, d in enumerate(splits[i + 1]):
                cols = nxt[d.first_neuron:d.first_neuron + d.neurons].indices
                dest[j, cols] = True
            routes = dest.sum(axis=0)
        else:
            routes = np.ones(ir.layers[i].n_out, dtype=np.int64)  # to the host
        for c in cores:
            c.output_axons = int(routes[c.first_neuron:c.first_neuron + c.neurons].sum())
    flat = [c for cores in splits for c in cores]
    for idx, c in enumerate(flat):
        c.core = idx
    violations = []
    for c in flat:
        for r in ("neurons", "input_axons", "output_axons", "synaptic_memory_bits"):
            if getattr(c, r) > getattr(lim, r):
                violations.append(f'layer "{c.layer}" core {c.core}: {getattr(c, r)} {r.replace("_", " ")}; '
                                  f"{profile.name} allows {getattr(lim, r)}")
    chips = profile.chip.chips
    total = {"neurons": sum(c.neurons for c in flat), "synapses": sum(c.synapses for c in flat)}
    if len(flat) > profile.cores_available:
        violations.append(f"{len(flat)} cores used; {profile.name} x{chips} has {profile.cores_available}")
    for r in ("neurons", "synapses"):
        cap = getattr(profile.chip, r) * chips
        if total[r] > cap:
            violations.append(f"{total[r]} {r} in the network; {profile.name} x{chips} holds {cap}")
    num = profile.numerics
    for l in ir.layers:
        if l.fixed is not None and not (num.weight_exp_min <= l.fixed.weight_exp <= num.weight_exp_max):
            violations.append(f'layer "{l.name}": weight_exp {l.fixed.weight_exp} outside '
                              f"[{num.weight_exp_min}, {num.weight_exp_max}] of {profile.name}")
    # lower bound on cores: neurons, and synaptic memory with each layer unsplit (splitting
    # only adds group headers), each divided by its per-core limit
    unsplit_bits = sum(_core_usage(c, 0, c.shape[0], profile, l.name).synaptic_memory_bits
                       for l, c in zip(ir.layers, conns))
    lower = max(1, math.ceil(total["neurons"] / lim.neurons), math.ceil(unsplit_bits / lim.synaptic_memory_bits))
    return Mapping(profile, flat, lower, violations)
