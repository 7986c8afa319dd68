"""Spatial tiling of conv layers onto neuro cores (docs/deployment.md sec. 12, "Conv tiling").

A conv layer's ``(C_out, H_out, W_out)`` neurons are cut into tiles of ``rows x cols x channels``
output neurons (the last tile along an axis may be smaller), one tile per core, as a conv
compiler does (NxTF: Rueckauer et al., ACM JETC 2022, arXiv 2101.04261). A tile's input axons
are the input neurons its surviving kernel weights reach: per input channel, its receptive
field with halo (1-D, output rows ``[y0, y1)``, stride ``s``, padding ``p``, kernel rows ``kh``):
input rows ``max(0, y0*s - p) .. min(H - 1, (y1 - 1)*s - p + kh - 1)``; an input channel with no
surviving weight into the tile's channels adds no axon, and pruned kernel rows/columns
narrow the field. Of the tile shapes whose every tile fits the per-core limits (neurons, input
axons, output axons, synaptic memory), the one with the fewest cores is chosen: its tiles plus
the cores the feeding layer needs at least for its routes into them (a halo neuron is sent to
every tile that reads it); ties go to fewer tiles, fewer input axons, then less synaptic memory.

Synaptic memory of a tile follows ``profile.synapse_cost.conv``: ``"shared"`` keeps each
surviving kernel slice ``(o, i)`` of the tile's output channels once per core, its non-zero
taps costing ``axon_memory_bits(taps, weight_bits)`` (one synapse group, no index: the tap
position gives the target); ``"unrolled"`` stores one synapse per (output neuron, input
neuron) pair, dense or sparse as the mapper costs a fully connected chunk.

The search scores each shape with per-tile figures that never undercount (a tap set is
widened to the product of its row and column projections; unrolled memory to every axon at
its largest group), then the chosen tiling is counted exactly from the unrolled connectivity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import scipy.sparse as sp

from dpap_deploy.errors import MappingError
from dpap_deploy.hardware_profiles import Profile


@dataclass(frozen=True)
class TileShape:
    """Output neurons per tile: ``rows`` x ``cols`` pixels x ``channels`` output channels."""

    rows: int
    cols: int
    channels: int

    def count(self, out_shape: tuple) -> int:
        """Tiles covering ``out_shape = (C, H, W)``."""
        c, h, w = out_shape
        return -(-h // self.rows) * -(-w // self.cols) * -(-c // self.channels)


def kernel_taps(layer, on_chip: bool = True) -> np.ndarray:
    """Surviving kernel weights ``(C_out, C_in, kH, kW)`` bool: mask and, once quantised, a
    non-zero integer. ``on_chip`` False (a current-encoded first layer, computed by the host): all False."""
    w = layer.masked_weight(fixed=layer.fixed is not None)
    return (w != 0) & on_chip


def footprint_1d(start: int, stop: int, taps: np.ndarray, stride: int, pad: int, size: int) -> int:
    """Input rows (or columns) that output rows ``[start, stop)`` reach through the kernel rows
    where ``taps`` is True: ``|{y*stride - pad + a : start <= y < stop, taps[a]} & [0, size)|``
    (the receptive field with halo, clipped at the borders; docs/deployment.md sec. 12)."""
    a = np.flatnonzero(taps)
    if a.size == 0 or stop <= start:
        return 0
    iy = (np.arange(start, stop)[:, None] * stride - pad + a[None, :]).ravel()
    return int(np.unique(iy[(iy >= 0) & (iy < size)]).size)


def _candidates(n: int) -> List[int]:
    """Tile sizes along an axis of ``n``: the smallest size giving each possible tile count."""
    return sorted({-(-n // k) for k in range(1, n + 1)})


def _slice_bits(taps: np.ndarray, profile: Profile) -> np.ndarray:
    """Shared cost ``(C_out, C_in)`` of each kernel slice: its non-zero taps as one synapse group."""
    from dpap_deploy.mapping import axon_memory_bits

    n = taps.reshape(taps.shape[0], taps.shape[1], -1).sum(axis=2)
    return np.where(n > 0, axon_memory_bits(n, profile.numerics.weight_bits, profile), 0)


class _Geometry:
    """What the search needs of one conv layer: shapes, tap sets per channel group, caches."""

    def __init__(self, layer, taps: np.ndarray, routes: np.ndarray, profile: Profile):
        self.layer, self.taps, self.profile = layer, taps, profile
        self.out_shape = layer.out_shape
        self.routes = routes.reshape(self.out_shape)
        self.slice_bits = _slice_bits(taps, profile)
        self._rows: Dict[tuple, np.ndarray] = {}
        self._groups: Dict[int, list] = {}

    def counts_1d(self, axis: int, t: int, taps_1d: np.ndarray) -> np.ndarray:
        """Footprint per tile along ``axis`` (1 rows, 2 cols) for tile size ``t``."""
        key = (axis, t, taps_1d.tobytes())
        if key not in self._rows:
            n, size = self.out_shape[axis], self.layer.in_shape[axis]
            s, p = self.layer.stride, self.layer.padding
            self._rows[key] = np.array([footprint_1d(y, min(y + t, n), taps_1d, s, p, size)
                                        for y in range(0, n, t)])
        return self._rows[key]

    def groups(self, tc: int) -> list:
        """Per channel group of ``tc``: [(row taps, col taps, input channels), ...] and its shared bits."""
        if tc not in self._groups:
            out = []
            for c0 in range(0, self.out_shape[0], tc):
                u = self.taps[c0:c0 + tc].any(axis=0)  # (C_in, kH, kW): taps any output channel uses
                a, b = u.any(axis=2), u.any(axis=1)
                keys: Dict[tuple, list] = {}
                for i in np.flatnonzero(u.reshape(u.shape[0], -1).any(axis=1)):
                    keys.setdefault((a[i].tobytes(), b[i].tobytes()), [a[i], b[i], 0])[2] += 1
                out.append((list(keys.values()), int(self.slice_bits[c0:c0 + tc].sum())))
            self._groups[tc] = out
        return self._groups[tc]


def _max_axons(geo: _Geometry, shape: TileShape) -> int:
    """Largest input-axon count of any tile (never below the exact count)."""
    best = 0
    for keys, _ in geo.groups(shape.channels):
        total = 0
        for a, b, n in keys:
            total = total + n * np.outer(geo.counts_1d(1, shape.rows, a), geo.counts_1d(2, shape.cols, b))
        best = max(best, int(np.max(total)))
    return best


def _routes_in(geo: _Geometry, shape: TileShape) -> int:
    """Routes the previous layer needs into these tiles: one per (input neuron, tile whose receptive
    field holds it), i.e. the sum of every tile's input axons (exact for whole kernel slices)."""
    total = 0
    for keys, _ in geo.groups(shape.channels):
        for a, b, n in keys:
            total += n * int(geo.counts_1d(1, shape.rows, a).sum()) * int(geo.counts_1d(2, shape.cols, b).sum())
    return total


def _max_routes(geo: _Geometry, shape: TileShape) -> int:
    """Largest output-axon count (routes summed over the tile's neurons) of any tile, exact."""
    c, h, w = geo.out_shape
    t = (shape.channels, shape.rows, shape.cols)
    pad = [(0, -(-n // k) * k - n) for n, k in zip((c, h, w), t)]
    r = np.pad(geo.routes, pad)
    nc, nh, nw = (x // k for x, k in zip(r.shape, t))
    return int(r.reshape(nc, t[0], nh, t[1], nw, t[2]).sum(axis=(1, 3, 5)).max())


def _max_memory(geo: _Geometry, shape: TileShape, axons: int, neurons: int) -> int:
    """Largest synaptic memory of any tile (bits, never below the exact figure)."""
    from dpap_deploy.mapping import axon_memory_bits

    prof = geo.profile
    if prof.synapse_cost.conv == "shared":
        return max(bits for _, bits in geo.groups(shape.channels))
    s, (kh, kw) = geo.layer.stride, geo.layer.kernel
    per_axon = min(neurons, shape.channels * -(-kh // s) * -(-kw // s))
    wb, idx = prof.numerics.weight_bits, prof.synapse_cost.index_bits
    dense = int(axon_memory_bits(np.array([neurons]), wb, prof)[0])
    sparse = int(axon_memory_bits(np.array([per_axon]), wb + idx, prof)[0])
    return axons * min(dense, sparse)


def tile_usage(geo: _Geometry, shape: TileShape) -> Dict[str, int]:
    """Per-core figures of the largest tile of ``shape``: neurons, input axons, output axons,
    synaptic memory bits (input axons and memory never below the exact counts)."""
    c, h, w = geo.out_shape
    neurons = min(shape.rows, h) * min(shape.cols, w) * min(shape.channels, c)
    axons = _max_axons(geo, shape)
    return {"neurons": neurons, "input_axons": axons, "output_axons": _max_routes(geo, shape),
            "synaptic_memory_bits": _max_memory(geo, shape, axons, neurons)}


def choose_tile(layer, taps: np.ndarray, routes: np.ndarray, profile: Profile, fed_by_cores: bool = False) -> TileShape:
    """The tile shape with the fewest cores whose every tile fits ``profile``'s neuro core
    (ties: fewer tiles, fewer input axons, then less synaptic memory, then the shape).

    Cores counted: the tiles, plus, when the layer is fed by a layer on cores (``fed_by_cores``),
    ``ceil(routes / output_axons)`` for the routes that layer then needs (:func:`_routes_in`: a
    tile's halo is sent to every tile that reads it), a floor on the previous layer's cores.

    Args:
        layer: a :class:`~dpap_deploy.ir.ConvLayer`.
        taps: :func:`kernel_taps` ``(C_out, C_in, kH, kW)``.
        routes: output routes per output neuron ``(C_out*H_out*W_out,)``, fixed by the next layer.
        fed_by_cores: the input comes from a layer on the chip (not the first layer).

    Raises:
        MappingError: no tile fits, not even a single neuron; names the layer, the resource and the limit.
    """
    geo = _Geometry(layer, taps, routes, profile)
    c, h, w = layer.out_shape
    best, best_key = None, None
    for tc in _candidates(c):
        for th in _candidates(h):
            for tw in _candidates(w):
                shape = TileShape(th, tw, tc)
                n = shape.count(layer.out_shape)
                if best_key is not None and n > best_key[0]:
                    continue
                use = tile_usage(geo, shape)
                if _over(use, profile):
                    continue
                prev = _prev_cores(geo, shape, profile) if fed_by_cores else 0
                key = (n + prev, n, use["input_axons"], use["synaptic_memory_bits"], -tc, th, tw)
                if best_key is None or key < best_key:
                    best, best_key = shape, key
    if best is None:
        _no_tile_fits(layer, geo, profile)
    return best


def _prev_cores(geo: _Geometry, shape: TileShape, profile: Profile) -> int:
    """Cores the previous layer needs at least for its routes into tiles of ``shape``."""
    lim = profile.core.output_axons
    return 0 if math.isinf(lim) else -(-_routes_in(geo, shape) // int(lim))


def _over(use: Dict[str, int], profile: Profile) -> List[str]:
    return [r for r, v in use.items() if v > getattr(profile.core, r)]


def _no_tile_fits(layer, geo: _Geometry, profile: Profile) -> None:
    """Raise the error for a layer whose single-neuron tile already breaks a per-core limit."""
    use = tile_usage(geo, TileShape(1, 1, 1))
    r = (_over(use, profile) or ["input_axons"])[0]
    raise MappingError(f'layer "{layer.name}": no conv tile fits a core: a 1 x 1 x 1 tile needs {use[r]} '
                       f'{r.replace("_", " ")} per core; {profile.name} allows {getattr(profile.core, r)}')


def tile_index(shape: TileShape, out_shape: tuple) -> np.ndarray:
    """Tile id of every output neuron ``(C_out*H_out*W_out,)`` in torch's ``(C, H, W)`` order;
    tiles numbered channel group first, then tile row, then tile column."""
    c, h, w = out_shape
    nh, nw = -(-h // shape.rows), -(-w // shape.cols)
    g = np.arange(c)[:, None, None] // shape.channels
    y = np.arange(h)[None, :, None] // shape.rows
    x = np.arange(w)[None, None, :] // shape.cols
    return ((g * nh + y) * nw + x).reshape(-1)


def tile_chunks(layer, conn: sp.csr_matrix, taps: np.ndarray, routes: np.ndarray, profile: Profile,
                index: int) -> List["Chunk"]:
    """Split conv layer ``layer`` (layer ``index`` of the IR, unrolled connectivity ``conn``
    ``(n_out, n_in)``) into tiles (:func:`choose_tile`), one :class:`~dpap_deploy.mapping.Chunk`
    per tile, counted exactly from ``conn``.

    Raises:
        MappingError: no tile fits a core (:func:`choose_tile`).
    """
    shape = choose_tile(layer, taps, routes, profile, fed_by_cores=index > 0)
    tile_of = tile_index(shape, layer.out_shape)
    n_tiles = int(tile_of.max()) + 1
    stats = _exact(conn, tile_of, n_tiles, profile)
    if profile.synapse_cost.conv == "shared":
        group_bits = np.array([bits for _, bits in _Geometry(layer, taps, routes, profile).groups(shape.channels)])
        nh, nw = -(-layer.out_shape[1] // shape.rows), -(-layer.out_shape[2] // shape.cols)
        stats["bits"] = group_bits[np.arange(n_tiles) // (nh * nw)]
        stats["format"] = ["shared"] * n_tiles
    return _make_chunks(layer.name, index, tile_of, n_tiles, stats, routes, shape)


def _exact(conn: sp.csr_matrix, tile_of: np.ndarray, n_tiles: int, profile: Profile) -> dict:
    """Per tile: input axons, synapses and unrolled synaptic memory (dense or sparse, the cheaper)."""
    from dpap_deploy.mapping import axon_memory_bits

    coo = conn.tocoo()
    t = tile_of[coo.row].astype(np.int64)
    pairs = sp.csr_matrix((np.ones(coo.nnz, dtype=np.int64), (t, coo.col)), shape=(n_tiles, conn.shape[1]))
    pairs.sum_duplicates()  # one entry per (tile, input axon), data = synapses of that axon into the tile
    per_axon, axons = pairs.data, np.diff(pairs.indptr)
    tile_u = np.repeat(np.arange(n_tiles), axons)
    neurons = np.bincount(tile_of, minlength=n_tiles)
    wb, idx = profile.numerics.weight_bits, profile.synapse_cost.index_bits
    sparse = np.bincount(tile_u, weights=axon_memory_bits(per_axon, wb + idx, profile), minlength=n_tiles)
    dense = axons * axon_memory_bits(neurons, wb, profile)
    fmt = ["dense" if d <= s else "sparse" for d, s in zip(dense, sparse)]
    return {"axons": axons, "synapses": np.bincount(t, minlength=n_tiles), "neurons": neurons,
            "bits": np.minimum(dense, sparse).astype(np.int64), "format": fmt}


def _make_chunks(name: str, index: int, tile_of: np.ndarray, n_tiles: int, stats: dict,
                 routes: np.ndarray, shape: TileShape) -> list:
    from dpap_deploy.mapping import Chunk

    order = np.argsort(tile_of, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(stats["neurons"])])
    out_axons = np.bincount(tile_of, weights=routes, minlength=n_tiles)
    chunks = []
    for k in range(n_tiles):
        idx = order[bounds[k]:bounds[k + 1]]
        chunks.append(Chunk(name, index, int(idx[0]), int(idx.size), int(stats["axons"][k]),
                            int(stats["synapses"][k]), int(stats["bits"][k]), stats["format"][k],
                            int(out_axons[k]), neuron_index=idx, tile=shape))
    return chunks


def min_shared_bits(taps: np.ndarray, profile: Profile) -> int:
    """A lower bound on a shared conv layer's synaptic memory over all cores: each surviving
    kernel weight is stored at least once, ``weight_bits`` each."""
    return int(taps.sum()) * profile.numerics.weight_bits


__all__ = ["TileShape", "kernel_taps", "footprint_1d", "choose_tile", "tile_chunks", "tile_index",
           "tile_usage", "min_shared_bits"]
