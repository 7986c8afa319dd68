"""The neuro-core mapper: every neuron of every layer onto a core under a profile's limits.

Every fully connected layer is split into contiguous chunks of neurons, each filling a core as
far as the profile's per-core limits allow; every conv layer into spatial tiles whose input axons
are the tile's receptive field with halo (:mod:`dpap_deploy.tiling`, docs/deployment.md sec. 12).
Then small chunks of different layers are packed onto shared cores (what nengo-loihi users asked
for: it maps one block per core).
Per core:

* ``neurons``: neurons (compartments) on the core;
* ``input_axons``: distinct presynaptic sources with at least one surviving synapse into the core
  (a layer's own neurons for recurrent weights, and its bias axon for an input bias);
* ``output_axons``: distinct (neuron, destination core) routes leaving the core (a neuron of
  the output population has one route, to the host);
* ``synaptic_memory_bits``: nengo-loihi's cost model (``SynapseConfig.bits_per_axon``), per input
  axon in groups of ``group_size`` synapses costing ``n*(weight_bits + index_bits) + header``
  rounded up to ``word_bits``; dense format (every neuron of the core, no index) or sparse
  format (surviving synapses only, with an index), the cheaper one per core; a conv tile on a
  chip that shares kernel weights (``[synapse_cost] conv = "shared"``) pays each surviving
  kernel slice once instead (docs/deployment.md sec. 12).

With current encoding (``ir.input_encoding == "current"``) the first layer's ``W x`` is computed
by the host and written as its neurons' bias each sample (``export/gate/bias_lif.py``): the layer
has its neurons (each with its bias register) but no input axons, synapses or synaptic memory on
a core, and the chip takes no input channels (:func:`on_chip_connectivity`).

Then the chip: cores used against ``chip.cores * chip.chips``, neurons and synapses against
the chip totals. Pruned synapses cut synaptic memory and fan-in: this is where pruning pays.
Counting is vectorised over synapses with ``scipy.sparse``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse as sp

from dpap_deploy import tiling
from dpap_deploy.errors import MappingError
from dpap_deploy.hardware_profiles import Profile
from dpap_deploy.ir import FCLayer, NetworkIR


def surviving(layer: FCLayer) -> sp.csr_matrix:
    """Surviving synapses of a layer ``(n_out, n_in)``: the mask, and a non-zero integer weight once
    quantised. A convolution is unrolled: one synapse per (output neuron, input neuron) pair that a
    surviving kernel weight connects (neurons in torch's ``(C, H, W)`` order)."""
    if layer.kind == "conv":
        return conv_connectivity(layer)
    keep = layer.mask if layer.fixed is None else layer.mask & (layer.fixed.weight != 0)
    return sp.csr_matrix(keep)


def on_chip_connectivity(ir: NetworkIR) -> List[sp.csr_matrix]:
    """Per layer the synapses a core holds: :func:`surviving`, except a current-encoded network's
    first layer, whose ``W x`` the host computes (its population's bias): no synapse, ``(n_out, n_in)`` empty."""
    conns = [surviving(l) for l in ir.layers]
    if ir.input_encoding == "current":
        conns[0] = sp.csr_matrix(conns[0].shape, dtype=bool)
    return conns


def recurrent_connectivity(layer) -> Optional[sp.csr_matrix]:
    """Surviving recurrent synapses ``(n_out, n_out)`` (rows: the receiving neuron, columns: the sending
    one) of a layer with ``recurrent`` weights: non-zero float weights, non-zero integers once
    quantised; None for a layer without."""
    r = getattr(layer, "recurrent", None)
    if r is None:
        return None
    keep = (r != 0) if layer.fixed is None or layer.fixed.recurrent_weight is None else layer.fixed.recurrent_weight != 0
    return sp.csr_matrix(keep)


def bias_connectivity(layer) -> Optional[sp.csr_matrix]:
    """The bias axon's synapses ``(n_out, 1)`` bool of a layer with ``input_bias`` (an input that spikes
    at every step, whose weights are the biases: ``export/quantize.py``), one per neuron whose bias is
    non-zero (its integer once quantised; conv: each channel's over its map, torch's ``(C, H, W)``
    order), as ``loihi-sim`` builds it; None without an input bias."""
    b = getattr(layer, "input_bias", None)
    if b is None:
        return None
    keep = (b != 0) if layer.fixed is None or layer.fixed.input_bias is None else (layer.fixed.input_bias != 0)
    return sp.csr_matrix(np.repeat(keep, layer.n_out // keep.shape[0]).reshape(-1, 1))


def _add_shared_bias_bits(chunks: List[Chunk], bias: sp.csr_matrix, profile: Profile) -> None:
    """Conv tiles of a chip that shares kernel weights: their memory counts the kernel slices only
    (:mod:`dpap_deploy.tiling`); add each tile's bias axon, dense format (``weight_bits`` a synapse)."""
    for ch in chunks:
        n = int(bias[ch.indices()].nnz)
        if n:
            ch.synaptic_memory_bits += int(axon_memory_bits(np.array([n]), profile.numerics.weight_bits, profile)[0])


def _add_recurrent_routes(chunks: List[Chunk], rec: sp.csr_matrix) -> None:
    """A recurrent layer's neurons also send to their own layer: one output route per (neuron, core of
    its own layer it has a recurrent synapse into), added to each chunk's output axons."""
    own = _routes(rec, chunks, rec.shape[0])
    for ch in chunks:
        ch.output_axons += int(own[ch.indices()].sum())


def conv_connectivity(layer) -> sp.csr_matrix:
    """The unrolled connectivity ``(C_out*H_out*W_out, C_in*H*W)`` of a :class:`~dpap_deploy.ir.ConvLayer`
    (True where a surviving weight, a non-zero integer once quantised, connects the two neurons)."""
    m = layer.unrolled(fixed=layer.fixed is not None)
    m.eliminate_zeros()
    return m.astype(bool)


def axon_memory_bits(counts: np.ndarray, bits_per_synapse: int, profile: Profile) -> np.ndarray:
    """Synaptic-memory bits per input axon for ``counts`` synapses each (nengo-loihi cost model)."""
    c = profile.synapse_cost
    counts = np.asarray(counts, dtype=np.int64)
    full, rem = counts // c.group_size, counts % c.group_size

    def group(n):
        return -(-(n * bits_per_synapse + c.group_header_bits) // c.word_bits) * c.word_bits

    return full * group(c.group_size) + np.where(rem > 0, group(rem), 0)


RESOURCES = ("neurons", "input_axons", "output_axons", "synaptic_memory_bits")


def _finite(x):
    """JSON-safe limit: ``None`` for ``inf`` (no limit)."""
    return None if isinstance(x, float) and math.isinf(x) else x


def _decay_violations(layer: FCLayer, profile: Profile, notes: List[str]) -> List[str]:
    """Check a quantised layer's decays (Lava's ``du``, ``dv``: the state keeps
    ``1 - (du+1)/4096`` and ``1 - dv/4096`` per step) against the profile's decay format.
    Approximations that fit (a bit shift for a fraction) go to ``notes``."""
    num, f = profile.numerics, layer.fixed
    if num.decay == "fraction":
        return [f'layer "{layer.name}": {k} = {v} needs more than the {num.decay_bits} bits {profile.name} has '
                f"(0..{2 ** num.decay_bits - 1})" for k, v in (("du", f.du), ("dv", f.dv))
                if not 0 <= int(v) < 2 ** num.decay_bits]
    if num.decay == "linear":
        return [f'layer "{layer.name}": {profile.name} has only a linear leak; the exponential decays of this '
                f"CUBA LIF (du {f.du}, dv {f.dv}) cannot be represented"]
    out = []
    for k, frac in (("du", (f.du + 1) / 4096.0), ("dv", f.dv / 4096.0)):  # "shift": loses 2**-shift per step
        if frac <= 0:
            continue
        shift = int(round(-math.log2(frac)))
        if not 0 <= shift < 2 ** num.decay_bits:
            out.append(f'layer "{layer.name}": {k} decay {frac:.4f} per step needs shift {shift}; '
                       f"{profile.name} has {num.decay_bits}-bit shifts")
        elif abs(2.0 ** -shift - frac) > 1e-9:
            notes.append(f'layer "{layer.name}": {profile.name} approximates the {k} decay {frac:.4f} per step by '
                         f"2**-{shift} = {2.0 ** -shift:.4f}")
    return out


def weight_bits_needed(w: np.ndarray) -> int:
    """Signed mantissa bits of integer weights once their common power of two is taken out
    (that factor is a weight exponent, which Loihi applies per synapse group for free).

    Lava's fixed-point synapses hold 8-bit mixed-sign weights as even values in [-256, 254]
    (``lava/utils/weightutils.py``: clip to 9 bits, truncate 1), i.e. 8 bits here.
    """
    w = np.asarray(w, dtype=np.int64)
    nz = w[w != 0]
    if nz.size == 0:
        return 0
    g = int(np.gcd.reduce(np.abs(nz)))
    m = nz // (g & -g)
    return int(max(int(m.max()), -int(m.min()) - 1, 0)).bit_length() + int(m.min() < 0)


@dataclass
class Chunk:
    """A part of one layer's neurons placed on a core: a contiguous range from ``first_neuron``
    (fully connected layers), or a conv tile (``tile``: its shape, :mod:`dpap_deploy.tiling`)
    whose neurons ``neuron_index`` are not contiguous in ``(C, H, W)`` order."""

    layer: str
    layer_index: int
    first_neuron: int
    neurons: int
    input_axons: int
    synapses: int
    synaptic_memory_bits: int
    memory_format: str
    output_axons: int = 0
    neuron_index: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    tile: Optional[object] = None
    bias_registers: int = 0

    def indices(self) -> np.ndarray:
        """The chunk's neurons, indices into its layer's population."""
        if self.neuron_index is not None:
            return self.neuron_index
        return np.arange(self.first_neuron, self.first_neuron + self.neurons)


@dataclass
class CoreUsage:
    """One neuro core: the layer chunks on it and each resource used.

    ``input_axons`` and ``synaptic_memory_bits`` add up over chunks (chunks of different
    layers have different presynaptic sources); ``output_axons`` counts routes
    (source neuron, destination core) leaving the core, one per neuron of the output layer.
    """

    core: int
    chunks: List[Chunk]

    @property
    def layer(self) -> str:
        """Names of the layers on the core, ``+``-joined when layers share it."""
        return "+".join(c.layer for c in self.chunks)

    @property
    def first_neuron(self) -> int:
        return self.chunks[0].first_neuron

    @property
    def neurons(self) -> int:
        return sum(c.neurons for c in self.chunks)

    @property
    def input_axons(self) -> int:
        return sum(c.input_axons for c in self.chunks)

    @property
    def synapses(self) -> int:
        return sum(c.synapses for c in self.chunks)

    @property
    def output_axons(self) -> int:
        return sum(c.output_axons for c in self.chunks)

    @property
    def synaptic_memory_bits(self) -> int:
        return sum(c.synaptic_memory_bits for c in self.chunks)

    @property
    def bias_registers(self) -> int:
        """Neurons on the core whose layer has a bias: each holds its own bias register (no limit
        counted: every Loihi neuron has one; a count for the report, ``numerics.bias_bits`` each)."""
        return sum(c.bias_registers for c in self.chunks)

    @property
    def memory_format(self) -> str:
        return "+".join(dict.fromkeys(c.memory_format for c in self.chunks))


@dataclass
class Mapping:
    """The result: per-core usage, per-layer totals, and whether it fits the profile.

    Attributes:
        cores: one :class:`CoreUsage` per neuro core used.
        lower_bound: no mapping of this network onto this profile uses fewer cores (the
            largest of the neuron, synaptic-memory, input-axon and output-axon bounds).
        violations: every limit broken, each naming the layer or core and the limit.
    """

    profile: Profile
    cores: List[CoreUsage]
    lower_bound: int
    violations: List[str] = field(default_factory=list)
    bounds: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.violations

    def layer_cores(self, name: str) -> List[CoreUsage]:
        """The cores holding (part of) layer ``name``."""
        return [c for c in self.cores if any(ch.layer == name for ch in c.chunks)]

    def to_report(self) -> dict:
        """The ``resources`` section of ``report.json``: used / limit and percent per resource
        (``limit`` and ``percent`` are ``null`` where the profile has no limit)."""
        lim = self.profile.core
        per_core = []
        for c in self.cores:
            entry = {"core": c.core, "layer": c.layer, "first_neuron": c.first_neuron,
                     "chunks": [{"layer": ch.layer, "first_neuron": ch.first_neuron, "neurons": ch.neurons,
                                 "synapses": ch.synapses, "memory_format": ch.memory_format} for ch in c.chunks],
                     "synapses": c.synapses, "memory_format": c.memory_format, "bias_registers": c.bias_registers}
            for res in RESOURCES:
                used, limit = getattr(c, res), getattr(lim, res)
                entry[res] = {"used": used, "limit": _finite(limit),
                              "percent": None if math.isinf(limit) else round(100.0 * used / limit, 2)}
            per_core.append(entry)
        per_layer = []
        names = dict.fromkeys(ch.layer for c in self.cores for ch in c.chunks)
        for name in names:
            chunks = [ch for c in self.cores for ch in c.chunks if ch.layer == name]
            cs = self.layer_cores(name)
            per_layer.append({
                "layer": name, "cores": len(cs), "neurons": sum(ch.neurons for ch in chunks),
                "synapses": sum(ch.synapses for ch in chunks),
                "synaptic_memory_bits": sum(ch.synaptic_memory_bits for ch in chunks),
                "bias_registers": sum(ch.bias_registers for ch in chunks),
                "max_input_axons_per_core": max(ch.input_axons for ch in chunks),
                "max_output_axons_per_core": max(ch.output_axons for ch in chunks),
                **_tile_entry(chunks),
            })
        return {
            "profile": self.profile.name,
            "profile_file": self.profile.source,
            "cores_used": len(self.cores),
            "cores_lower_bound": self.lower_bound,
            "cores_over_lower_bound": len(self.cores) - self.lower_bound,
            "lower_bounds": dict(self.bounds),
            "cores_available": _finite(self.profile.cores_available),
            "chips": self.profile.chip.chips,
            "neurons": sum(c.neurons for c in self.cores),
            "synapses": sum(c.synapses for c in self.cores),
            "fits": self.fits,
            "violations": list(self.violations),
            "notes": list(self.notes),
            "per_layer": per_layer,
            "per_core": per_core,
        }


def _tile_entry(chunks: List[Chunk]) -> dict:
    """A conv layer's ``tile`` ``{"rows", "cols", "channels"}`` and ``tiles`` count for the report
    (nothing for a fully connected layer)."""
    if chunks[0].tile is None:
        return {}
    t = chunks[0].tile
    return {"tile": {"rows": t.rows, "cols": t.cols, "channels": t.channels}, "tiles": len(chunks)}


def synapse_bits(layer, profile: Profile) -> int:
    """Bits one synapse of ``layer`` stores besides any index: ``numerics.weight_bits``, plus
    ``synapse_cost.delay_bits`` when the layer has synaptic delays (its delay field)."""
    return profile.numerics.weight_bits + (profile.synapse_cost.delay_bits if layer.delay is not None else 0)


def _chunk(conn: sp.csr_matrix, start: int, stop: int, profile: Profile, layer: str, index: int,
           routes: Optional[np.ndarray] = None, wb: Optional[int] = None) -> Chunk:
    """Layer ``layer``'s neurons ``[start, stop)`` on one core, ``wb`` bits per synapse (default
    ``numerics.weight_bits``; :func:`synapse_bits`)."""
    start, stop = int(start), int(stop)
    rows = conn[start:stop]
    n = stop - start
    per_axon = np.bincount(rows.indices, minlength=conn.shape[1])
    per_axon = per_axon[per_axon > 0]
    wb = profile.numerics.weight_bits if wb is None else wb
    sparse_bits = int(axon_memory_bits(per_axon, wb + profile.synapse_cost.index_bits, profile).sum())
    dense_bits = int(axon_memory_bits(np.full(len(per_axon), n), wb, profile).sum())
    fmt, bits = ("dense", dense_bits) if dense_bits <= sparse_bits else ("sparse", sparse_bits)
    out = int(routes[start:stop].sum()) if routes is not None else 0
    return Chunk(layer, index, start, n, int(len(per_axon)), int(rows.nnz), bits, fmt, out)


_ADDITIVE = ("neurons", "input_axons", "output_axons", "synaptic_memory_bits")


def _over(c, profile: Profile) -> List[str]:
    lim = profile.core
    return [r for r in _ADDITIVE if getattr(c, r) > getattr(lim, r)]


def _split_layer(conn: sp.csr_matrix, routes: np.ndarray, profile: Profile, name: str, index: int,
                 **cost) -> List[Chunk]:
    """Split a layer into chunks that each fit a core, filling each core as far as it goes
    (binary search on the chunk's last neuron: every resource grows with the chunk), so the
    last, smaller chunk can share a core with a small layer. ``routes``: output routes per
    neuron, fixed by the next layer's split."""
    lim = profile.core
    n = conn.shape[0]
    chunks: List[Chunk] = []
    start, guess = 0, 0
    while start < n:
        cap = int(min(n, start + lim.neurons)) if math.isfinite(lim.neurons) else n
        made: Dict[int, Chunk] = {}

        def fits(stop: int) -> bool:
            if stop not in made:
                made[stop] = _chunk(conn, start, stop, profile, name, index, routes, **cost)
            return not _over(made[stop], profile)

        if not fits(start + 1):
            one = made[start + 1]
            r = _over(one, profile)[0]
            raise MappingError(
                f'layer "{name}" needs {getattr(one, r)} {r.replace("_", " ")} per core '
                f"(neuron {start}); {profile.name} allows {getattr(lim, r)}"
            )
        lo, hi = start + 1, cap + 1  # lo fits; hi is the first stop known not to (cap + 1: none)
        # chunks of a layer tend to be alike: try the last chunk's size and one more, then the cap
        for probe in (start + guess, start + guess + 1, cap):
            if lo < probe < hi:
                if fits(probe):
                    lo = probe
                else:
                    hi = probe
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        chunks.append(made[lo])
        guess = lo - start
        start = lo
    return chunks


def _routes(next_conn: sp.csr_matrix, next_chunks: List[Chunk], n: int) -> np.ndarray:
    """Output routes per neuron: the number of distinct chunks (= cores: a core never holds
    two chunks of one layer) of the next layer that the neuron has a synapse into."""
    chunk_of = np.empty(next_conn.shape[0], dtype=np.int64)
    for j, ch in enumerate(next_chunks):
        chunk_of[ch.indices()] = j
    coo = next_conn.tocoo()
    if coo.nnz == 0:
        return np.zeros(n, dtype=np.int64)
    # (source neuron, chunk) pairs: duplicates summed by the CSR conversion (no sort of all synapses)
    pairs = sp.csr_matrix((np.ones(coo.nnz, dtype=np.int32), (coo.col, chunk_of[coo.row])),
                          shape=(n, len(next_chunks)))
    pairs.sum_duplicates()
    return np.diff(pairs.indptr).astype(np.int64)


def _pack(chunks: List[Chunk], profile: Profile) -> List[List[Chunk]]:
    """First fit, in layer order: a chunk joins the first core that has room for its neurons,
    axons and synaptic memory and holds no other chunk of the same layer (vectorised over cores)."""
    lim = np.array([float(getattr(profile.core, r)) for r in _ADDITIVE])
    n_layers = max((ch.layer_index for ch in chunks), default=0) + 1
    used = np.zeros((len(chunks), len(_ADDITIVE)))
    has_layer = np.zeros((len(chunks), n_layers), dtype=bool)
    bins: List[List[Chunk]] = []
    for ch in chunks:
        need = np.array([getattr(ch, r) for r in _ADDITIVE], dtype=float)
        k = len(bins)
        ok = np.flatnonzero(~has_layer[:k, ch.layer_index] & np.all(used[:k] + need <= lim, axis=1))
        j = int(ok[0]) if ok.size else k
        if j == k:
            bins.append([])
        bins[j].append(ch)
        used[j] += need
        has_layer[j, ch.layer_index] = True
    return bins


def tiled(layer) -> bool:
    """A conv layer the spatial tiler places (:mod:`dpap_deploy.tiling`, which assumes ``groups`` and
    ``dilation`` 1); other layers, grouped or dilated convolutions included, are split as their
    unrolled synapses, each stored (no kernel-weight sharing counted: an upper bound on its memory)."""
    return layer.kind == "conv" and layer.groups == 1 and layer.dilation == 1


def _taps(ir: NetworkIR, i: int) -> np.ndarray:
    """Surviving kernel weights of conv layer ``i`` on the chip (none for a current-encoded first layer)."""
    return tiling.kernel_taps(ir.layers[i], on_chip=not (i == 0 and ir.input_encoding == "current"))


def _host_layer_note(first) -> str:
    """The report's note on a current-encoded first layer (placed without synapses)."""
    f = first.fixed
    bias = f", bias_exp {f.bias_exp}" if f is not None and f.bias_exp is not None else ""
    return (f'layer "{first.name}": current encoding: the host computes W x of each sample ({int(surviving(first).nnz)} '
            f"weights) and writes it as the {first.n_out} neurons' biases (bias_mant, 13 bits{bias}); no input axons, "
            "synapses or synaptic memory on the chip, and no input channels")


def map_network(ir: NetworkIR, profile: Profile, pack: bool = True) -> Mapping:
    """Assign every neuron of every layer to a neuro core of ``profile``.

    Each fully connected layer is split into contiguous chunks that fill a core as far as its
    limits allow (neurons, input axons, output axons, synaptic memory), each conv layer into
    spatial tiles (:mod:`dpap_deploy.tiling`, docs/deployment.md sec. 12); with ``pack``, chunks
    of different layers then share cores where all still fit (first fit in layer order). Output axons are counted on the
    final placement. Per-neuron fan-in/fan-out, the chip's input/output/hidden limits, the
    cores, neurons and synapses of the board and the weight exponent range are checked too.

    Args:
        ir: the network (dense or pruned; quantised or not). With current encoding the first
            layer places only its neurons (:func:`on_chip_connectivity`; a note says so) and its
            input channels are not the chip's. A layer with recurrent weights
            (:func:`recurrent_connectivity`) has its own neurons as input axons and synapses
            (nengo-loihi maps a recurrent connection as any other, its source block being the
            target's own), and each of its neurons one output route per core of its own layer it
            reaches; those routes are added after the split, so a core they push over its
            output-axon limit is reported as a violation. A layer with an input bias has a bias
            axon (:func:`bias_connectivity`): one input axon on each of its cores and one synapse per
            neuron there with a non-zero bias, in the same memory cost model (conv tiles are chosen
            without it, so a tile it pushes over a limit is reported as a violation). The lower
            bounds count the feed-forward synapses only (still bounds, looser for recurrent or biased layers).
        profile: the target; ``profile.with_chips(n)`` / ``with_cores(n)`` for boards and budgets.
        pack: let small layers share cores (False: one layer per core, as nengo-loihi).

    Returns:
        A :class:`Mapping`; ``fits`` is False with ``violations`` naming each broken limit.

    Raises:
        MappingError: a single neuron alone exceeds a per-core limit (no split or tile can
            help); the message names the layer, the resource and the limit.
        UnsupportedLayerError: a node with no place on a core (an average pooling that could
            not be folded into a layer's weights).
    """
    ir.require_nodes(("fc", "conv", "flatten"), "the mapper")
    _refuse_conv_delays(ir)
    lim = profile.core
    conns = on_chip_connectivity(ir)
    recs = [recurrent_connectivity(l) for l in ir.layers]
    biases = [bias_connectivity(l) for l in ir.layers]
    n_layers = len(ir.layers)
    # split from the output back: a layer's output axons depend on how the next layer is split
    per_layer: List[List[Chunk]] = [[] for _ in ir.layers]
    for i in reversed(range(n_layers)):
        layer = ir.layers[i]
        if i + 1 < n_layers:
            routes = _routes(conns[i + 1], per_layer[i + 1], layer.n_out)
        else:
            routes = np.ones(layer.n_out, dtype=np.int64)  # one route each to the host
        # a recurrent layer's own neurons and a bias axon are sources too: input axons and synapses of [W | R | b]
        extra = [m for m in (recs[i], biases[i]) if m is not None]
        conn = sp.hstack([conns[i], *extra]).tocsr() if extra else conns[i]
        if tiled(layer):  # spatial tiles (docs/deployment.md sec. 12)
            per_layer[i] = tiling.tile_chunks(layer, conn, _taps(ir, i), routes, profile, i)
            if biases[i] is not None and profile.synapse_cost.conv == "shared":
                _add_shared_bias_bits(per_layer[i], biases[i], profile)
        else:
            per_layer[i] = _split_layer(conn, routes, profile, layer.name, i, wb=synapse_bits(layer, profile))
        for ch in per_layer[i] if layer.bias is not None else ():
            ch.bias_registers = ch.neurons  # one bias register per neuron of a biased layer
    for i, rec in enumerate(recs):
        if rec is not None:
            _add_recurrent_routes(per_layer[i], rec)
    chunks = [ch for layer_chunks in per_layer for ch in layer_chunks]
    groups = _pack(chunks, profile) if pack else [[ch] for ch in chunks]
    cores = [CoreUsage(i, g) for i, g in enumerate(groups)]
    notes: List[str] = [_host_layer_note(ir.layers[0])] if ir.input_encoding == "current" else []
    notes += _layer_notes(ir)
    violations = (_core_violations(cores, profile) + _fan_violations(ir, conns, profile)
                  + _chip_violations(ir, cores, profile) + _numeric_violations(ir, profile, notes))
    bounds = _lower_bounds(ir, conns, cores, profile)
    lower = max(1, *bounds.values())
    return Mapping(profile, cores, lower, violations, bounds, notes)


def _refuse_conv_delays(ir: NetworkIR) -> None:
    """The mapper has no cost model for a convolution's delays (the tiler shares kernel weights; a delay
    per neuron has no place there): :class:`UnsupportedLayerError` naming the layer."""
    from dpap_deploy.errors import UnsupportedLayerError

    bad = [l.name for l in ir.layers if l.kind == "conv" and l.delay is not None]
    if bad:
        raise UnsupportedLayerError(f"the mapper takes synaptic delays on fully connected layers only; conv layers "
                                    f"with delays: {', '.join(bad)}")


def _layer_notes(ir: NetworkIR) -> List[str]:
    """Report notes on layers placed with a simplified cost: sigma-delta populations (counted as LIF
    neurons and synapses; their graded spikes and sigma/delta state not costed) and grouped or dilated
    convolutions (:func:`tiled`)."""
    notes = []
    for l in ir.layers:
        if l.activation == "sdnn":
            notes.append(f'layer "{l.name}": sigma-delta neurons ({l.sigma_delta.message_bits}-bit graded spikes) '
                         "counted as neurons and synapses like LIF; their sigma/delta state is not costed (estimate)")
        if l.kind == "conv" and not tiled(l):
            notes.append(f'layer "{l.name}": groups {l.groups}, dilation {l.dilation}: placed as its unrolled '
                         "synapses, each stored (no kernel-weight sharing counted)")
    return notes


# -- design rules: each returns every violation it finds, a line naming the layer or core and the limit
def _core_violations(cores: List[CoreUsage], profile: Profile) -> List[str]:
    """Per core: neurons, input axons, output axons and synaptic memory against the profile's core."""
    lim, out = profile.core, []
    for c in cores:
        for r in RESOURCES:
            if getattr(c, r) > getattr(lim, r):
                out.append(f'core {c.core} ("{c.layer}"): {getattr(c, r)} {r.replace("_", " ")}; '
                           f"{profile.name} allows {getattr(lim, r)}")
    return out


def _fan_violations(ir: NetworkIR, conns, profile: Profile) -> List[str]:
    """Per neuron: fan-in (synapses in) and fan-out (synapses out to the next layer)."""
    lim, out = profile.core, []
    for i, (layer, conn) in enumerate(zip(ir.layers, conns)):
        fan_in = np.diff(conn.indptr)
        if fan_in.size and fan_in.max() > lim.max_fan_in:
            out.append(f'layer "{layer.name}": a neuron has fan-in {int(fan_in.max())} '
                       f"(neuron {int(fan_in.argmax())}); {profile.name} allows {lim.max_fan_in}")
        if i + 1 < len(conns):
            fan_out = np.bincount(conns[i + 1].indices, minlength=layer.n_out)
            if fan_out.size and fan_out.max() > lim.max_fan_out:
                out.append(f'layer "{layer.name}": a neuron has fan-out {int(fan_out.max())} '
                           f"(neuron {int(fan_out.argmax())}); {profile.name} allows {lim.max_fan_out}")
    return out


def _chip_violations(ir: NetworkIR, cores: List[CoreUsage], profile: Profile) -> List[str]:
    """The chip's input, output and hidden limits; cores, neurons and synapses of the board."""
    chip, out = profile.chip, []
    n_in, n_out = ir.layers[0].n_in, ir.layers[-1].n_out
    hidden = sum(l.n_out for l in ir.layers[:-1])
    if n_in > chip.max_inputs and ir.input_encoding != "current":  # current encoding: the host drives layer 0
        out.append(f'layer "{ir.layers[0].name}": {n_in} input channels; {profile.name} takes {chip.max_inputs}')
    if n_out > chip.max_outputs:
        out.append(f'layer "{ir.layers[-1].name}": {n_out} output neurons; {profile.name} has {chip.max_outputs}')
    if hidden > chip.max_hidden:
        out.append(f"{hidden} hidden neurons; {profile.name} has {chip.max_hidden}")
    chips = chip.chips
    if len(cores) > profile.cores_available:
        out.append(f"{len(cores)} cores used; {profile.name} x{chips} has {profile.cores_available}")
    for r in ("neurons", "synapses"):
        total, cap = sum(getattr(c, r) for c in cores), getattr(chip, r) * chips
        if total > cap:
            out.append(f"{total} {r} in the network; {profile.name} x{chips} holds {cap}")
    return out


def _numeric_violations(ir: NetworkIR, profile: Profile, notes: List[str]) -> List[str]:
    """Fixed-point layers: weight exponent range, decays (in the profile's format), threshold and weight bits."""
    num, out = profile.numerics, []
    for i, l in enumerate(ir.layers):
        if l.fixed is None:
            continue
        host = ir.input_encoding == "current" and i == 0  # layer 0's weights stay on the host, its neurons do not
        if not host and not (num.weight_exp_min <= l.fixed.weight_exp <= num.weight_exp_max):
            out.append(f'layer "{l.name}": weight_exp {l.fixed.weight_exp} outside '
                       f"[{num.weight_exp_min}, {num.weight_exp_max}] of {profile.name}")
        out += _decay_violations(l, profile, notes)
        if not 0 <= int(l.fixed.vth) < 2 ** num.threshold_bits:
            out.append(f'layer "{l.name}": vth = {int(l.fixed.vth)} needs more than the {num.threshold_bits} '
                       f"bits {profile.name} has (0..{2 ** num.threshold_bits - 1})")
        bits = 0 if host else weight_bits_needed(l.masked_weight(fixed=True))  # zeros are ignored
        if getattr(l.fixed, "recurrent_weight", None) is not None:  # on the same cores, same weight format
            bits = max(bits, weight_bits_needed(l.fixed.recurrent_weight))
        if bits > num.weight_bits:
            out.append(f'layer "{l.name}": weights need {bits} bits; {profile.name} stores {num.weight_bits}')
        out += _delay_bias_violations(l, profile)
    return out


def _delay_bias_violations(layer, profile: Profile) -> List[str]:
    """A layer's synaptic delays against ``numerics.max_delay`` (total steps: ``1 + delay``) and its bias
    mantissas against ``numerics.bias_bits`` (signed; 0: the profile has no bias figure)."""
    num, out = profile.numerics, []
    if layer.delay is not None and 1 + int(np.max(layer.delay, initial=0)) > num.max_delay:
        out.append(f'layer "{layer.name}": synaptic delay of {int(np.max(layer.delay))} steps beyond the first; '
                   f"{profile.name} delays a spike by at most {num.max_delay} steps in all")
    mant = None if layer.fixed is None else layer.fixed.bias_mant
    if layer.bias is not None and num.bias_bits == 0:
        out.append(f'layer "{layer.name}": has a bias; {profile.name} gives no neuron bias figure (numerics.bias_bits)')
    elif mant is not None and np.abs(mant).max(initial=0) >= 2 ** (num.bias_bits - 1):
        out.append(f'layer "{layer.name}": bias_mant up to {int(np.abs(mant).max())} needs more than the '
                   f"{num.bias_bits} signed bits {profile.name} has")
    return out


def _min_layer_bits(ir: NetworkIR, i: int, conn: sp.csr_matrix, unsplit: Chunk, profile: Profile) -> int:
    """Synaptic memory layer ``i`` needs at least, over all cores (bits): a conv layer on a chip
    that shares kernel weights stores each surviving kernel weight at least once
    (:func:`dpap_deploy.tiling.min_shared_bits`); otherwise every surviving synapse costs at least
    ``weight_bits`` and every active input axon at least one group header."""
    if tiled(ir.layers[i]) and profile.synapse_cost.conv == "shared":
        return tiling.min_shared_bits(_taps(ir, i), profile)
    return conn.nnz * synapse_bits(ir.layers[i], profile) + unsplit.input_axons * profile.synapse_cost.group_header_bits


def _layer_cap(ir: NetworkIR, i: int, conns, profile: Profile) -> float:
    """The most neurons of layer ``i`` one core can hold: the neuron limit and, where every synapse is
    stored (not a shared conv layer), the synaptic memory over the smallest fan-ins (each synapse
    costs at least ``weight_bits``)."""
    lim = profile.core
    shared = tiled(ir.layers[i]) and profile.synapse_cost.conv == "shared"
    if shared or math.isinf(lim.synaptic_memory_bits):
        return lim.neurons
    bits = np.sort(np.diff(conns[i].indptr)) * synapse_bits(ir.layers[i], profile)
    k = int(np.searchsorted(np.cumsum(bits), lim.synaptic_memory_bits, side="right"))
    return min(lim.neurons, max(k, 1))


def _min_routes(ir: NetworkIR, conns, profile: Profile) -> List[np.ndarray]:
    """Per layer, per neuron, the fewest output routes any placement gives it: one to the host for
    the output layer; else ``ceil(targets / cap)`` for a neuron with ``targets`` synapses onward, ``cap``
    the most next-layer neurons a core holds (:func:`_layer_cap`): its targets span that many cores."""
    out = []
    for i, layer in enumerate(ir.layers):
        if i + 1 == len(ir.layers):
            out.append(np.ones(layer.n_out, dtype=np.int64))
            continue
        targets = np.bincount(conns[i + 1].indices, minlength=layer.n_out)
        cap = _layer_cap(ir, i + 1, conns, profile)
        out.append((targets > 0).astype(np.int64) if math.isinf(cap) else -(-targets // int(cap)))
    return out


def _bound(used, limit) -> int:
    return 0 if math.isinf(limit) else math.ceil(used / limit)


def _disjoint_bound(conns, layer_bounds: List[int], profile: Profile) -> int:
    """Layers whose neurons never share a core (the smallest fan-ins of the two need more input axons
    than a core has: a neuron needs one input axon per source, and layers have different sources)
    use disjoint cores: the largest sum of per-layer bounds over a set of pairwise such layers."""
    lim = profile.core.input_axons
    fan = [int(np.diff(c.indptr).min()) if c.shape[0] else 0 for c in conns]
    n = len(fan)

    def best(cands: List[int], total: int) -> int:
        out = total
        for j, v in enumerate(cands):
            rest = [u for u in cands[j + 1:] if fan[u] + fan[v] > lim]
            out = max(out, best(rest, total + layer_bounds[v]))
        return out

    return best(list(range(n)), 0) if n <= 24 else max(layer_bounds, default=0)


def _lower_bounds(ir: NetworkIR, conns, cores: List[CoreUsage], profile: Profile) -> dict:
    """Lower bounds on the cores any placement needs, per resource: neurons; synaptic memory
    (:func:`_min_layer_bits`; word rounding and indices only add, and they can shrink when a layer is
    split, so the unsplit cost is not a bound); input axons with every layer unsplit (splitting or
    tiling repeats sources: a tile's halo); output axons (:func:`_min_routes`); layers that can
    never share a core (:func:`_disjoint_bound`). docs/deployment.md "Conv tiling" derives each."""
    lim = profile.core
    unsplit = [_chunk(c, 0, c.shape[0], profile, l.name, i) for i, (l, c) in enumerate(zip(ir.layers, conns))]
    bits = [_min_layer_bits(ir, i, c, u, profile) for i, (c, u) in enumerate(zip(conns, unsplit))]
    routes = [int(r.sum()) for r in _min_routes(ir, conns, profile)]
    per_layer = [max(_bound(l.n_out, lim.neurons), _bound(b, lim.synaptic_memory_bits),
                     _bound(u.input_axons, lim.input_axons), _bound(r, lim.output_axons))
                 for l, b, u, r in zip(ir.layers, bits, unsplit, routes)]
    return {"neurons": _bound(sum(c.neurons for c in cores), lim.neurons),
            "synaptic_memory_bits": _bound(sum(bits), lim.synaptic_memory_bits),
            "input_axons": _bound(sum(c.input_axons for c in unsplit), lim.input_axons),
            "output_axons": _bound(sum(routes), lim.output_axons),
            "disjoint_layers": _disjoint_bound(conns, per_layer, profile)}
