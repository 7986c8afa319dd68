"""Spatial tiling of conv layers (dpap_deploy/tiling.py, docs/deployment.md "Conv tiling"):
hand-computed receptive fields, tile choices, memory costs and errors."""
import math

import numpy as np
import pytest

from dpap_deploy.errors import MappingError, ProfileError
from dpap_deploy.hardware_profiles import load_profile
from dpap_deploy.ir import ConvLayer, FCLayer, Flatten, LIFNeurons, NetworkIR
from dpap_deploy.mapping import map_network
from dpap_deploy.tiling import TileShape, footprint_1d, tile_index
from dpap_deploy.train.compact import fold_pool_into_conv

NEURONS = LIFNeurons(5e-3, 10e-3, 1.0)


def _conv(in_shape, c_out, k=3, pad=1, stride=1, mask=None, weight=None, name="conv"):
    c_in = in_shape[0]
    w = np.full((c_out, c_in, k, k), 0.5) if weight is None else weight
    m = np.ones((c_out, c_in), bool) if mask is None else mask
    return ConvLayer(name, w, m, NEURONS, in_shape, (c_out, c_in), stride=stride, padding=pad)


def _net(*nodes):
    first = nodes[0]
    return NetworkIR("t", int(np.prod(first.in_shape)), 4, 1e-3, list(nodes), input_shape=first.in_shape)


def _profile(tmp_path, core="", conv="shared", name="p"):
    f = tmp_path / f"{name}.toml"
    f.write_text(f'extends = "loihi2"\nname = "{name}"\ndescription = "x"\n[core]\n{core}\n'
                 f'[synapse_cost]\nconv = "{conv}"\n')
    return load_profile(str(f))


def _tiles(mapping, layer="conv"):
    entry = next(l for l in mapping.to_report()["per_layer"] if l["layer"] == layer)
    t = entry["tile"]
    return (t["rows"], t["cols"], t["channels"]), entry["tiles"]


def _chunks(mapping, layer="conv"):
    return [ch for c in mapping.cores for ch in c.chunks if ch.layer == layer]


def test_receptive_field_with_halo_at_borders_and_stride():
    full = np.ones(3, bool)
    # kernel 3, padding 1, stride 1, 5 input rows: rows y*1 - 1 + a
    assert footprint_1d(0, 2, full, 1, 1, 5) == 3       # {-1,0,1} | {0,1,2}, clipped: 0..2
    assert footprint_1d(2, 4, full, 1, 1, 5) == 4       # 1..4: max(0, 2-1) .. min(4, 3-1+2)
    assert footprint_1d(4, 5, full, 1, 1, 5) == 2       # {3,4,5} clipped at the bottom: 3..4
    # the 2C2F's conv2 after its pooling is folded: kernel 6, stride 2, padding 2, 20 input rows
    six = np.ones(6, bool)
    assert footprint_1d(0, 5, six, 2, 2, 20) == 12      # -2 .. 4*2-2+5 = 11, clipped: 0..11
    assert footprint_1d(5, 10, six, 2, 2, 20) == 12     # 8 .. 9*2-2+5 = 21, clipped: 8..19
    # pruned kernel rows narrow the field; stride beyond the kernel leaves gaps
    assert footprint_1d(0, 2, np.array([True, False, True]), 1, 0, 10) == 4   # {0,2} | {1,3}
    assert footprint_1d(0, 2, np.array([True, False, False]), 1, 0, 10) == 2  # {0} | {1}
    assert footprint_1d(0, 2, np.array([True, True]), 3, 0, 10) == 4          # {0,1} | {3,4}
    assert footprint_1d(0, 2, np.zeros(3, bool), 1, 1, 5) == 0


def test_tile_index_orders_channel_group_then_row_then_column():
    idx = tile_index(TileShape(2, 3, 1), (2, 3, 5)).reshape(2, 3, 5)
    # per channel: 2 tile rows x 2 tile columns (cols 0-2, 3-4); channel 1 starts at tile 4
    np.testing.assert_array_equal(idx[0], [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [2, 2, 2, 3, 3]])
    np.testing.assert_array_equal(idx[1], idx[0] + 4)


def test_fewest_tiles_then_fewest_axons(tmp_path):
    # (2, 6, 6) -> 4 x 6 x 6 = 144 neurons; 40 neurons per core: at least 4 tiles. Of the 4-tile
    # shapes, 6x6x1 needs 2*6*6 = 72 axons, 3x6x2 2*4*6 = 48, 3x3x4 2*4*4 = 32: 3x3x4 wins.
    ir = _net(_conv((2, 6, 6), 4))
    m = map_network(ir, _profile(tmp_path, "neurons = 40"), pack=False)
    assert _tiles(m) == ((3, 3, 4), 4)
    assert [ch.input_axons for ch in _chunks(m)] == [32] * 4
    assert [ch.neurons for ch in _chunks(m)] == [36] * 4
    # 20 input axons per core: only a 1x1 tile (interior receptive field 3x3, 2 channels = 18) fits
    m = map_network(ir, _profile(tmp_path, "neurons = 40\ninput_axons = 20"), pack=False)
    assert _tiles(m) == ((1, 1, 4), 36)
    axons = sorted(ch.input_axons for ch in _chunks(m))
    assert axons[0] == 2 * 2 * 2 and axons[-1] == 18  # corner 2x2, interior 3x3
    assert m.fits


def test_pruned_input_channels_remove_axons_and_set_channel_groups(tmp_path):
    # output channels 0-1 read input channel 0 only, 2-3 input channel 1 only: a tile of channels
    # {0, 1} has one input channel of axons. 40 neurons, 20 axons: 3x3x4 needs 2*4*4 = 32, the
    # 4- and 6-tile shapes 24 or more; 3x3x2 (8 tiles) needs 1*4*4 = 16.
    mask = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], bool)
    ir = _net(_conv((2, 6, 6), 4, mask=mask))
    m = map_network(ir, _profile(tmp_path, "neurons = 40\ninput_axons = 20"), pack=False)
    assert _tiles(m) == ((3, 3, 2), 8)
    assert [ch.input_axons for ch in _chunks(m)] == [16] * 8
    # input channel 1 pruned everywhere: half the axons of the unpruned 3x3x4 tiles
    mask[:, 1] = False
    m = map_network(_net(_conv((2, 6, 6), 4, mask=mask)), _profile(tmp_path, "neurons = 40"), pack=False)
    assert _tiles(m) == ((3, 3, 4), 4) and [ch.input_axons for ch in _chunks(m)] == [16] * 4


def test_stride_two_after_pool_folding(tmp_path):
    # a 3x3 kernel, padding 1, behind a 2x2 average pooling folds into kernel 6, stride 2, padding 2;
    # (1, 8, 8) -> (1, 4, 4). Output rows [0, 2) read input rows -2..5 -> 0..5 (6), rows [2, 4) 2..7 (6).
    k, stride, pad = fold_pool_into_conv(np.full((1, 1, 3, 3), 0.5), 2, 1)
    layer = _conv((1, 8, 8), 1, k=6, pad=pad, stride=stride, weight=k)
    assert (stride, pad, layer.out_shape) == (2, 2, (1, 4, 4))
    m = map_network(_net(layer), _profile(tmp_path, "input_axons = 40"), pack=False)
    assert _tiles(m) == ((2, 2, 1), 4)  # 2x4 and 4x2 tiles need 6*8 = 48 axons
    assert [ch.input_axons for ch in _chunks(m)] == [36] * 4
    # exact counts agree with the unrolled connectivity
    conn = layer.unrolled().tocsr()
    for ch in _chunks(m):
        assert ch.input_axons == int((np.asarray(conn[ch.indices()].sum(axis=0)) > 0).sum())


def test_shared_and_unrolled_memory_hand_computed(tmp_path):
    # (1, 4, 4) -> (2, 4, 4), kernel 3, padding 1, one tile. Loihi 2 cost model: groups of 64,
    # 10 header bits, 64-bit words, 8-bit weights, 10-bit index.
    ir = _net(_conv((1, 4, 4), 2))
    shared = map_network(ir, load_profile("loihi2"))
    # shared: each of the 2 kernel slices once: 9*8 + 10 = 82 bits -> 128; 2 slices = 256 bits
    assert _tiles(shared) == ((4, 4, 2), 1)
    assert shared.cores[0].synaptic_memory_bits == 256 and shared.cores[0].memory_format == "shared"
    # unrolled: 200 synapses; per input pixel 2 channels x (2 or 3) x (2 or 3) targets: corners 8,
    # edges 12, inner 18; sparse (18 bits each): 4*192 + 8*256 + 4*384 = 4352 bits; dense
    # (32 targets x 8 bits + 10 -> 320 bits per axon) 16*320 = 5120: sparse wins.
    unrolled = map_network(ir, _profile(tmp_path, conv="unrolled"))
    c = unrolled.cores[0]
    assert (c.synapses, c.input_axons, c.synaptic_memory_bits, c.memory_format) == (200, 16, 4352, "sparse")


def test_lower_bound_counts_shared_kernels_once(tmp_path):
    # the layer above: shared needs at least 18 weights * 8 bits = 144 bits; unrolled at least
    # 200 * 8 + 16 axons * 10 header bits = 1760 bits. With 1000 bits per core: 1 and 2 cores.
    ir = _net(_conv((1, 4, 4), 2))
    shared = map_network(ir, _profile(tmp_path, "synaptic_memory_bits = 1000", name="s"))
    unrolled = map_network(ir, _profile(tmp_path, "synaptic_memory_bits = 1000", conv="unrolled", name="u"))
    assert shared.bounds["synaptic_memory_bits"] == 1
    assert unrolled.bounds["synaptic_memory_bits"] == math.ceil(1760 / 1000)
    assert len(unrolled.cores) >= unrolled.lower_bound and unrolled.fits


def test_conv_then_fc_routes_follow_the_tiles(tmp_path):
    conv = _conv((1, 6, 6), 2)
    fc = FCLayer("fc", np.full((3, 72), 0.5), np.ones((3, 72), bool), NEURONS, (3, 72))
    ir = _net(conv, Flatten("fc_flatten", (2, 6, 6)), fc)
    m = map_network(ir, _profile(tmp_path, "neurons = 36"), pack=False)
    tiles = _chunks(m)
    seen = np.concatenate([ch.indices() for ch in tiles])
    assert sorted(seen.tolist()) == list(range(72))  # every conv neuron on exactly one core
    # one fc core: one route per conv neuron
    assert [ch.output_axons for ch in tiles] == [ch.neurons for ch in tiles]
    assert m.to_report()["per_layer"][-1].get("tile") is None


def test_no_tile_fits_names_layer_and_limit(tmp_path):
    # a 1x1x1 tile reads 3 input channels x 3 x 3 = 27 input neurons
    ir = _net(_conv((3, 6, 6), 2, name="conv7"))
    with pytest.raises(MappingError, match=r'layer "conv7": no conv tile fits a core: a 1 x 1 x 1 tile needs '
                                           r"27 input axons per core; p allows 20"):
        map_network(ir, _profile(tmp_path, "input_axons = 20"))


def test_bad_conv_value_names_file_and_field(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('extends = "loihi2"\nname = "bad"\ndescription = "x"\n[synapse_cost]\nconv = "box"\n')
    with pytest.raises(ProfileError, match=r"bad\.toml: synapse_cost\.conv = 'box'; expected one of 'shared', "
                                           r"'unrolled'"):
        load_profile(str(f))


def test_bundled_profiles_say_how_conv_synapses_are_stored():
    conv = {n: load_profile(n).synapse_cost.conv for n in ("loihi1", "loihi2", "kapoho-point", "truenorth",
                                                          "xylo-audio2")}
    assert conv == {"loihi1": "shared", "loihi2": "shared", "kapoho-point": "shared", "truenorth": "unrolled",
                    "xylo-audio2": "unrolled"}


def test_route_and_disjoint_layer_bounds_hand_computed(tmp_path):
    # 8 -> 40 -> 30, dense, 4096 bits per core: an fc2 neuron costs at least 40 * 8 = 320 bits, so a
    # core holds at most 12 of them; each fc1 neuron's 30 targets span >= ceil(30/12) = 3 cores.
    # Routes at least 40 * 3 + 30 (to the host) = 150; 100 output axons per core: 2 cores.
    rng = np.random.default_rng(0)
    layers = [FCLayer("fc1", rng.normal(size=(40, 8)), np.ones((40, 8), bool), NEURONS, (40, 8)),
              FCLayer("fc2", rng.normal(size=(30, 40)), np.ones((30, 40), bool), NEURONS, (30, 40))]
    ir = NetworkIR("t", 8, 4, 1e-3, layers)
    m = map_network(ir, _profile(tmp_path, "synaptic_memory_bits = 4096\noutput_axons = 100"))
    assert m.bounds["output_axons"] == 2 and m.fits and len(m.cores) >= m.lower_bound
    # 45 input axons per core: fan-ins 8 + 40 > 45, so fc1 and fc2 never share a core; fc2 alone
    # needs ceil((1200 * 8 + 40 * 10 header bits) / 4096) = 3 cores (memory), fc1 one: at least 4 cores
    m = map_network(ir, _profile(tmp_path, "synaptic_memory_bits = 4096\ninput_axons = 45", name="q"))
    assert m.bounds["disjoint_layers"] == 4 and m.lower_bound == 4 and len(m.cores) >= 4


@pytest.mark.parametrize("seed", range(6))
def test_lower_bound_never_exceeds_a_mapping(tmp_path, seed):
    # random small conv -> conv (stride 2) -> fc networks with pruned kernel slices, on tight cores:
    # whatever the mapper finds, no true lower bound can be above it
    rng = np.random.default_rng(seed)
    c1, c2, hw = int(rng.integers(2, 6)), int(rng.integers(2, 6)), int(rng.integers(6, 11))
    conv1 = _conv((2, hw, hw), c1, mask=rng.random((c1, 2)) < 0.8, name="conv1")
    conv2 = _conv(conv1.out_shape, c2, k=4, pad=1, stride=2, mask=rng.random((c2, c1)) < 0.7, name="conv2")
    n = int(np.prod(conv2.out_shape))
    fm = rng.random((6, n)) < 0.5
    fc = FCLayer("fc", fm * 0.5, fm, NEURONS, (6, n))
    ir = _net(conv1, conv2, Flatten("fc_flatten", conv2.out_shape), fc)
    core = "neurons = 40\ninput_axons = 160\noutput_axons = 96\nsynaptic_memory_bits = 8192"
    for conv in ("shared", "unrolled"):
        m = map_network(ir, _profile(tmp_path, core, conv=conv, name=conv))
        assert len(m.cores) >= m.lower_bound, (conv, m.bounds)
