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
    assert {"loihi1", "loihi2"} <= set(bundled_profiles())
    p = load_profile("loihi1")
    assert (p.core.neurons, p.core.input_axons, p.core.output_axons, p.core.synaptic_memory_bits) == \
        (1024, 4096, 4096, 1_048_576)
    assert p.cores_available == 128
    text = open(p.source).read()
    for line in text.splitlines():
        if "=" in line and not line.strip().startswith(("#", "name", "description")):
            assert "#" in line, f"{p.source}: figure without a source comment: {line}"
    assert "estimate" in open(load_profile("loihi2").source).read()


VALID = open(os.path.join(os.path.dirname(__file__), "..", "hardware_profiles", "loihi1.toml")).read()


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("neurons = 1024", "neurons = -1"), "core.neurons = -1 must be positive"),
    (lambda t: t.replace("input_axons = 4096", "input_axons = \"many\""), "core.input_axons = 'many' has type str; expected integer"),
    (lambda t: t.replace("output_axons = 4096 ", "# "), "missing key core.output_axons"),
    (lambda t: t.replace("[numerics]", "[numerics]\nfoo = 3"), "unknown key numerics.foo"),
    (lambda t: "extra = 1\n" + t, "unknown key 'extra'"),
    (lambda t: t[: len(t) // 2] + "\n[[[ = \n", "not valid TOML"),
    (lambda t: t.replace("[synapse_cost]", "[other]"), "unknown key 'other'"),
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
    fc1 = [c for c in m.cores if c.layer == "fc1"]
    assert len(fc1) == 3 and sum(c.neurons for c in fc1) == 2500   # 2500 / 1024 -> 3 cores
    mask = ir.layers[0].mask
    for c in fc1:
        rows = mask[c.first_neuron:c.first_neuron + c.neurons]
        assert c.input_axons == int(rows.any(axis=0).sum())
        assert c.synapses == int(rows.sum())
    # every fc1 neuron with a synapse into fc2's single core has one output route
    assert sum(c.output_axons for c in fc1) == int(ir.layers[1].mask.any(axis=0).sum())
    assert rep["fits"] and rep["cores_used"] == 4 and rep["cores_lower_bound"] == 3
    assert rep["per_core"][0]["neurons"] == {"used": fc1[0].neurons, "limit": 1024,
                                             "percent": round(100 * fc1[0].neurons / 1024, 2)}


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
