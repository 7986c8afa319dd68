import os

import numpy as np
import pytest

from dpap_deploy.errors import MappingError, ProfileError
from dpap_deploy.hardware_profiles import bundled_profiles, load_profile, parse_profile
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.mapping import axon_memory_bits, map_network

NEURONS = LIFNeurons(5e-3, 10e-3, 1.0)


def _net(shapes, density=1.0, seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    n_in = shapes[0]
    for i, n in enumerate(shapes[1:]):
        m = rng.random((n, n_in)) < density
        layers.append(FCLayer(f"fc{i + 1}", m * 0.5, m, NEURONS, (n, n_in)))
        n_in = n
    return NetworkIR("t", shapes[0], 8, 1e-3, layers)


def test_bundled_profiles_load_with_sources():
    assert {"loihi1", "loihi2", "loihi2-sim", "truenorth", "xylo-audio2", "kapoho-point"} <= set(bundled_profiles())
    p = load_profile("loihi1")
    assert (p.core.neurons, p.core.input_axons, p.core.output_axons, p.core.synaptic_memory_bits) == \
        (1024, 4096, 4096, 1_048_576)
    assert p.cores_available == 128
    for name in bundled_profiles():
        text = open(load_profile(name).source).read()
        for line in text.splitlines():
            if "=" in line and not line.strip().startswith(("#", "name", "description", "extends")):
                assert "#" in line, f"{name}: figure without a source comment: {line}"
    assert "estimate" in open(load_profile("loihi2").source).read()


def test_profiles_extend_and_scale():
    l2, board, sim = load_profile("loihi2"), load_profile("kapoho-point"), load_profile("loihi2-sim")
    assert board.chip.chips == 8 and board.cores_available == 8 * 128 and board.core == l2.core
    assert sim.cores_available == float("inf") and sim.core.neurons == float("inf")
    assert sim.numerics == l2.numerics  # same integer ranges as the chip
    assert load_profile("loihi1").with_chips(2).cores_available == 256
    assert load_profile("loihi1").with_cores(3).cores_available == 3
    with pytest.raises(ProfileError, match="--budget-cores 500: loihi1 has only 128 cores"):
        load_profile("loihi1").with_cores(500)
    with pytest.raises(ProfileError, match="--chips must be a positive integer"):
        load_profile("loihi1").with_chips(0)


def test_user_profile_extends_a_bundled_one(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('extends = "loihi1"\nname = "mine"\ndescription = "x"\n[core]\nneurons = 64\nmax_fan_in = 100\n')
    p = load_profile(str(f))
    assert (p.name, p.core.neurons, p.core.max_fan_in, p.core.input_axons) == ("mine", 64, 100, 4096)
    f.write_text(f'extends = "{f}"\nname = "loop"\ndescription = "x"\n')
    with pytest.raises(ProfileError, match="makes a loop"):
        load_profile(str(f))
    f.write_text('extends = "loihi1"\nname = "m"\ndescription = "x"\n[core]\nneurons = -inf\n')
    with pytest.raises(ProfileError, match="core.neurons = -inf has type float; expected integer or inf"):
        load_profile(str(f))


VALID = open(os.path.join(os.path.dirname(__file__), "..", "hardware_profiles", "loihi1.toml")).read()


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("neurons = 1024", "neurons = -1"), "core.neurons = -1 must be positive"),
    (lambda t: t.replace("input_axons = 4096", "input_axons = \"many\""), "core.input_axons = 'many' has type str; expected integer"),
    (lambda t: t.replace("output_axons = 4096 ", "# "), "missing key core.output_axons"),
    (lambda t: t.replace("[numerics]", "[numerics]\nfoo = 3"), "unknown key numerics.foo"),
    (lambda t: "extra = 1\n" + t, "unknown key 'extra'"),
    (lambda t: t[: len(t) // 2] + "\n[[[ = \n", "not valid TOML"),
    (lambda t: t.replace("[synapse_cost]", "[other]"), "unknown key 'other'"),
    (lambda t: t.replace('decay = "fraction"', 'decay = "log"'), "numerics.decay = 'log'; expected one of 'fraction', 'shift', 'linear'"),
    (lambda t: t.replace("neurons = 1024", "neurons = inf").replace("weight_bits = 8", "weight_bits = inf"),
     "numerics.weight_bits = inf has type float; expected integer"),
])
def test_bad_profiles_name_file_and_key(edit, message):
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_profile("my.toml", edit(VALID))
    assert str(e.value).startswith("my.toml")


def test_unknown_profile_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile 'loihi9'.*loihi1, loihi2"):
        load_profile("loihi9")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "mine.toml"))


def test_synaptic_memory_cost_hand_checked():
    p = load_profile("loihi1")
    # 64 sparse synapses: 64*(8+10)+10 = 1162 bits -> 19 words of 64 = 1216
    # 65: one full group (1216) + 1 synapse: 18+10 = 28 -> 64
    # 10 dense: 10*8+10 = 90 -> 128
    np.testing.assert_array_equal(axon_memory_bits(np.array([64, 65, 0]), 18, p), [1216, 1280, 0])
    np.testing.assert_array_equal(axon_memory_bits(np.array([10]), 8, p), [128])


def test_mapper_counts_per_core_resources():
    p = load_profile("loihi1")
    ir = _net([100, 2500, 10], density=0.1)
    m = map_network(ir, p)
    rep = m.to_report()
    fc1 = [ch for c in m.cores for ch in c.chunks if ch.layer == "fc1"]
    assert len(fc1) == 3 and sum(c.neurons for c in fc1) == 2500   # 2500 / 1024 -> 3 cores
    mask = ir.layers[0].mask
    for c in fc1:
        rows = mask[c.first_neuron:c.first_neuron + c.neurons]
        assert c.input_axons == int(rows.any(axis=0).sum())
        assert c.synapses == int(rows.sum())
    # every fc1 neuron with a synapse into fc2's single core has one output route
    assert sum(c.output_axons for c in fc1) == int(ir.layers[1].mask.any(axis=0).sum())
    # fc1 fills two cores (1024 each) and 452 on a third, which fc2 (10 neurons) shares:
    # 3 cores, the lower bound
    assert [c.neurons for c in fc1] == [1024, 1024, 452]
    assert rep["fits"] and rep["cores_used"] == 3 and rep["cores_lower_bound"] == 3
    assert m.cores[2].layer == "fc1+fc2" and m.cores[2].neurons == 462
    assert rep["per_core"][1]["neurons"] == {"used": 1024, "limit": 1024, "percent": 100.0}
    unpacked = map_network(ir, p, pack=False)
    assert len(unpacked.cores) == 4 and unpacked.cores[3].layer == "fc2"


def test_pruning_reduces_synaptic_memory_and_fan_in():
    p = load_profile("loihi1")
    dense = map_network(_net([512, 512, 10], 1.0), p)
    pruned = map_network(_net([512, 512, 10], 0.05), p)
    mem = lambda m: sum(c.synaptic_memory_bits for c in m.cores)
    assert mem(pruned) < mem(dense) / 4
    assert len(pruned.cores) < len(dense.cores)
    assert any(c.memory_format == "sparse" for c in pruned.cores)
    assert all(c.memory_format == "dense" for c in dense.cores)


def test_network_too_large_for_the_chip_does_not_fit():
    p = load_profile("loihi1")
    m = map_network(_net([64, 140_000, 10], 0.001), p)
    assert not m.fits
    assert any("cores used; loihi1 x1 has 128" in v for v in m.violations)
    assert any("neurons in the network; loihi1 x1 holds 131072" in v for v in m.violations)


def test_a_neuron_whose_fan_in_exceeds_a_core_names_layer_and_limit():
    p = load_profile("loihi1")
    with pytest.raises(MappingError, match='layer "fc1" needs 5120 input axons per core .*loihi1 allows 4096'):
        map_network(_net([5120, 4, 10], 1.0), p)


def test_truenorth_hand_computed():
    # 200 -> 200 -> 10, dense. fc1: 200 neurons, 200 input axons, crossbar 200 x 200 bits.
    # fc2 cannot share fc1's core: 200 + 200 input axons > 256. Lower bound: input axons 400 / 256 -> 2.
    m = map_network(_net([200, 200, 10]), load_profile("truenorth"))
    assert [c.layer for c in m.cores] == ["fc1", "fc2"]
    c0, c1 = m.cores
    assert (c0.neurons, c0.input_axons, c0.synaptic_memory_bits, c0.output_axons) == (200, 200, 40_000, 200)
    assert (c1.neurons, c1.input_axons, c1.synaptic_memory_bits, c1.output_axons) == (10, 200, 2_000, 10)
    # disjoint layers: every fc1 and fc2 neuron has fan-in 200, 200 + 200 > 256: one core each at least
    assert m.bounds == {"neurons": 1, "synaptic_memory_bits": 1, "input_axons": 2, "output_axons": 1,
                        "disjoint_layers": 2}
    assert m.lower_bound == 2 and m.fits
    with pytest.raises(MappingError, match='layer "fc1" needs 300 input axons per core .*truenorth allows 256'):
        map_network(_net([300, 20, 10]), load_profile("truenorth"))


def test_small_layers_share_one_loihi_core():
    # 20 -> 30 -> 20 -> 10 dense, dense format per input axon: n*8 + 10 bits rounded up to 64:
    # fc1 20 axons x 256 = 5120, fc2 30 x 192 = 5760, fc3 20 x 128 = 2560 -> 13440 bits
    p = load_profile("loihi1")
    m = map_network(_net([20, 30, 20, 10]), p)
    assert len(m.cores) == 1 and m.cores[0].layer == "fc1+fc2+fc3"
    c = m.cores[0]
    assert (c.neurons, c.input_axons, c.synaptic_memory_bits, c.output_axons) == (60, 70, 13_440, 60)
    assert len(map_network(_net([20, 30, 20, 10]), p, pack=False).cores) == 3
    # a layer split over two cores never shares a core with itself
    big = map_network(_net([8, 1500, 10]), p)
    assert [c.layer for c in big.cores] == ["fc1", "fc1+fc2"]  # 1024 + 476 neurons, fc2 joins the 476


def test_xylo_io_and_fan_out_limits():
    xylo = load_profile("xylo-audio2")
    assert map_network(_net([16, 100, 8]), xylo).fits
    bad = map_network(_net([64, 100, 10]), xylo)
    assert 'layer "fc1": 64 input channels; xylo-audio2 takes 16' in bad.violations
    assert 'layer "fc2": 10 output neurons; xylo-audio2 has 8' in bad.violations
    fan = map_network(_net([16, 100, 100, 8]), xylo)
    assert 'layer "fc1": a neuron has fan-out 100 (neuron 0); xylo-audio2 allows 64' in fan.violations
    assert map_network(_net([16, 100, 100, 8], density=0.3, seed=1), xylo).fits  # ~30 targets per neuron
    assert "1100 hidden neurons; xylo-audio2 has 1000" in map_network(_net([16, 1000, 100, 8], 0.01), xylo).violations


def test_simulator_profile_has_no_limits_and_reports_null():
    import json

    m = map_network(_net([64, 5000, 10], 0.5), load_profile("loihi2-sim"))
    rep = m.to_report()
    assert m.fits and rep["cores_used"] == 1 and rep["cores_available"] is None
    assert rep["per_core"][0]["neurons"] == {"used": 5010, "limit": None, "percent": None}
    json.dumps(rep, allow_nan=False)


def test_weight_bits_needed_hand_computed():
    from dpap_deploy.mapping import weight_bits_needed

    assert weight_bits_needed(np.array([-256, 254, 2])) == 8  # Lava's even 8-bit weights
    assert weight_bits_needed(np.array([127, -128])) == 8
    assert weight_bits_needed(np.array([3, 0, 1])) == 2
    assert weight_bits_needed(np.array([-2, 2])) == 2  # sign + 1
    assert weight_bits_needed(np.array([4, 4])) == 1  # a power of two is a weight exponent
    assert weight_bits_needed(np.array([5, 5])) == 3  # other scales are not free
    assert weight_bits_needed(np.array([0, 0])) == 0


def test_fixed_point_ranges_are_checked_against_the_profile():
    from dpap_deploy.ir import FixedPoint

    ir = _net([20, 30, 10])
    for l in ir.layers:
        w = np.where(l.mask, 100, 0).astype(np.int32)
        l.fixed = FixedPoint(w, 0, 818, 410, 5000, 1.0)
    assert map_network(ir, load_profile("loihi1")).fits
    # Xylo keeps 1 - 2**-k per step: du 818 (loses 819/4096 = 0.2000 per step) -> k = 2 (0.25),
    # dv 410 (0.1001) -> k = 3 (0.125): they fit, as approximations
    xylo = map_network(ir, load_profile("xylo-audio2"))
    assert not [v for v in xylo.violations if "decay" in v or "du" in v]
    assert 'layer "fc1": xylo-audio2 approximates the du decay 0.2000 per step by 2**-2 = 0.2500' in xylo.notes
    assert 'layer "fc1": xylo-audio2 approximates the dv decay 0.1001 per step by 2**-3 = 0.1250' in xylo.notes
    tn = map_network(ir, load_profile("truenorth"))
    assert any("truenorth has only a linear leak" in v for v in tn.violations)
    eight = parse_profile("e.toml", VALID.replace("decay_bits = 12", "decay_bits = 8"))
    assert 'layer "fc1": du = 818 needs more than the 8 bits loihi1 has (0..255)' in map_network(ir, eight).violations
    ir.layers[0].fixed = FixedPoint(ir.layers[0].fixed.weight, 0, 818, 410, 200_000, 1.0)
    assert 'layer "fc1": vth = 200000 needs more than the 17 bits loihi1 has (0..131071)' in \
        map_network(ir, load_profile("loihi1")).violations
    # 100 = 25 * 2^2: 5 bits once the power of two goes into the weight exponent -> TrueNorth's 1 bit is too few
    assert 'layer "fc2": weights need 5 bits; truenorth stores 1' in map_network(ir, load_profile("truenorth")).violations


def test_loihi2_hand_computed():
    # 64 -> 9000 -> 10 at 1 % density: 9000 neurons > 8192 per core -> 8192 + 808; fc2 joins the 808
    m = map_network(_net([64, 9000, 10], 0.01), load_profile("loihi2"))
    assert [c.neurons for c in m.cores] == [8192, 818]
    assert [c.layer for c in m.cores] == ["fc1", "fc1+fc2"]
    assert m.bounds["neurons"] == 2 and m.lower_bound == 2 and m.fits
    board = map_network(_net([64, 9000, 10], 0.01), load_profile("kapoho-point"))
    assert board.to_report()["cores_available"] == 1024 and board.to_report()["chips"] == 8
