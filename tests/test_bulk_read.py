"""Lava's results leave through FileSink (one .npy file per sink, read whole), not per-element get_var
(issue 14): the same spikes as Lava's own RingBuffer sink read with ``data.get()``, over a chunked run,
and the export's run records the hidden populations of the first samples as a separate probe run does."""
import numpy as np
import pytest
import torch

from dpap_deploy.data import rate_encode
from dpap_deploy.data.event_digits import load_event_digits
from dpap_deploy.export import lava_sim
from dpap_deploy.export.quantize import quantize
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR
from dpap_deploy.stages import lava_probe
from dpap_deploy.train.compact import to_ir
from dpap_deploy.train.models import SpikingCNN


def _mlp(sizes=(64, 24, 16, 10), T=10, seed=0):
    rng = np.random.default_rng(seed)
    neurons = LIFNeurons(tau_syn_s=5e-3, tau_mem_s=10e-3, v_th=1.0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0.3 / np.sqrt(a), 11.0 / np.sqrt(a), (b, a))
        m = rng.random((b, a)) < 0.5
        layers.append(FCLayer(f"fc{i + 1}", w * m, m, neurons, (b, a)))
    return quantize(NetworkIR("bulk", sizes[0], T, 1e-3, layers))


@pytest.fixture(scope="module")
def events():
    return load_event_digits(time_steps=6, limit=60)


def _conv(events):
    torch.manual_seed(0)
    m = SpikingCNN(events.x_train.shape[2:], (4, 6), (16,), 10)
    with torch.no_grad():
        for g, layer in zip((2.0, 3.0, 6.0, 5.0), m.layers):
            layer.weight.mul_(g)
    x = np.ascontiguousarray(np.swapaxes(events.x_test[:5], 0, 1)).astype(np.float32)  # (T, N, C, H, W)
    return quantize(to_ir(m, 6)), x


def _both_sinks(ir, x, tmp_path, chunks):
    """Build the network with FileSinks and also hang Lava's RingBuffer on every population; run in
    ``chunks`` (``RunSteps`` each); return (file rasters, ring-buffer rasters), output last."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer

    data, _ = lava_sim._lava_input(ir, x)
    steps = data.shape[-1]
    _, chain, sink, hidden = lava_sim.build(ir, data, record_hidden=True, record_dir=str(tmp_path))
    rings = []
    for _, lif in chain:  # no timestep gates here: the sinks hang on the populations themselves
        rings.append(RingBuffer(shape=lif.s_out.shape, buffer=steps))
        lif.s_out.connect(rings[-1].a_in)
    assert sum(chunks) == steps
    try:
        for n in chunks:
            sink.run(condition=RunSteps(num_steps=n), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        old = [np.asarray(r.data.get()) for r in rings]  # Lava's per-element get_var
    finally:
        sink.stop()
    new = [h.read() for h in hidden] + [sink.read()]  # after stop(): the files stay
    return new, old


def test_file_sink_equals_ring_buffer_on_an_mlp_over_chunks(digits, tmp_path):
    ir = _mlp()
    x = rate_encode(digits.x_test[:6], ir.time_steps, seed=1)
    steps = 6 * ir.time_steps + len(ir.layers)
    new, old = _both_sinks(ir, x, tmp_path, [25, 1, steps - 26])
    assert new[-1].sum() > 10 and all(n.sum() > 0 for n in new)
    for n, o in zip(new, old):
        assert n.shape == o.shape and n.dtype == np.int8
        np.testing.assert_array_equal(n, o)


def test_file_sink_equals_ring_buffer_on_a_conv_net(events, tmp_path):
    ir, x = _conv(events)
    steps = x.shape[0] * x.shape[1] + len(ir.layers)
    new, old = _both_sinks(ir, x, tmp_path, [steps])
    assert new[0].ndim == 4 and new[-1].sum() > 0  # conv populations in Lava's (W, H, C) + steps
    for n, o in zip(new, old):
        np.testing.assert_array_equal(n, o)


def test_run_gives_the_same_spikes_whatever_the_chunk(digits):
    ir = _mlp(seed=2)
    x = rate_encode(digits.x_test[:5], ir.time_steps, seed=3)
    c1, i1 = lava_sim.run(ir, x, record_hidden=True)
    c2, i2 = lava_sim.run(ir, x, record_hidden=True, chunk=7)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(i1["output_spikes"], i2["output_spikes"])
    for a, b in zip(i1["hidden_spikes"], i2["hidden_spikes"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_export_run_records_what_a_probe_run_gives(kind, digits, events, tmp_path):
    if kind == "mlp":
        ir = _mlp(seed=4)
        x = rate_encode(digits.x_test[:7], ir.time_steps, seed=5)
    else:
        ir, x = _conv(events)
    n = 3
    res = lava_sim.export_loihi_sim(ir, str(tmp_path), spikes=x, probe_samples=n)
    probe = lava_probe(res.network, x, samples=n)
    assert len(res.hidden_spikes) == len(ir.layers) - 1
    for mine, theirs in zip(res.hidden_spikes, probe.hidden):
        assert mine.shape == theirs.shape and mine.shape[:2] == (ir.time_steps, n)
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(res.output_spikes[:, :n], probe.output)
    np.testing.assert_array_equal(res.counts[:n], probe.counts)
    (tmp_path / "plain").mkdir()
    plain = lava_sim.export_loihi_sim(ir, str(tmp_path / "plain"), spikes=x)  # no probe asked: none recorded
    assert plain.hidden_spikes is None
    np.testing.assert_array_equal(plain.output_spikes, res.output_spikes)


@pytest.mark.parametrize("hidden", [2, 8])  # 3 recordings share one FileSinks process; 9 need one FileSink each
def test_every_population_recorded_equals_the_emulator(hidden, digits, tmp_path):
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.gate import MAX_PORTS, FileSink, FileSinks

    ir = _mlp(sizes=(64,) + (20,) * hidden + (10,), seed=6)
    x = rate_encode(digits.x_test[:4], ir.time_steps, seed=7)
    counts, info = lava_sim.run(ir, x, record_hidden=True)
    _, rasters = emulate(ir, x, record=True)
    np.testing.assert_array_equal(info["output_spikes"], rasters[-1])
    for mine, theirs in zip(info["hidden_spikes"], rasters[:-1]):
        np.testing.assert_array_equal(mine, theirs)
    data, _ = lava_sim._lava_input(ir, x)
    _, _, sink, _ = lava_sim.build(ir, data, record_hidden=True, record_dir=str(tmp_path))
    assert isinstance(sink, FileSinks if hidden + 1 <= MAX_PORTS else FileSink)
