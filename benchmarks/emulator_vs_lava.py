"""Throughput of the torch fixed-point emulator against Lava's CPU simulator, same network and data.

    .venv/bin/python benchmarks/emulator_vs_lava.py [--from runs/demo]

Network: ``--from DIR`` uses a run's exported ``network.npz`` (e.g. ``make demo``'s), otherwise a
random 64-256-128-10 network at 50 % density, quantised. Data: the 360 test digits (``--all-digits``:
all 1797), rate-coded with T = 32. Throughput = time steps x samples per second of wall time (Lava: building and
running the processes; emulator: one call after a warm-up call that compiles, 2 threads;
median of 3 calls). Both emulator engines run: ``numba`` (the default, fused event-driven kernel) and
``torch`` (tensor operations, batch 512). Agreement: the fraction of equal output spikes
(every sample, every step), each engine against Lava.
"""
import lava.magma.core.process.process  # noqa: F401  (Lava first: it fixes multiprocessing's start method)

import argparse
import os
import time

import numpy as np
import torch

from dpap_deploy.data import load_digits, rate_encode
from dpap_deploy.export import lava_sim
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.quantize import quantize
from dpap_deploy.ir import FCLayer, LIFNeurons, NetworkIR


def random_network(sizes, T, density=0.5, seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        m = rng.random((b, a)) < density
        w = rng.normal(0.4 / np.sqrt(a * density), 10.0 / np.sqrt(a * density), (b, a))
        layers.append(FCLayer(f"fc{i + 1}", w * m, m, LIFNeurons(5e-3, 10e-3, 1.0), (b, a)))
    return quantize(NetworkIR("bench", sizes[0], T, 1e-3, layers))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--from", dest="from_dir")
    p.add_argument("--all-digits", action="store_true", help="all 1797 digits instead of the 360 test digits")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.from_dir:
        ir = NetworkIR.load(os.path.join(args.from_dir, "network.npz"))
    else:
        ir = random_network([64, 256, 128, 10], T=32)
    ds = load_digits()
    data = np.concatenate([ds.x_train, ds.x_test]) if args.all_digits else ds.x_test
    x = rate_encode(data, ir.time_steps, seed=10_007)
    T, N, _ = x.shape
    t0 = time.perf_counter()
    counts_lava, info = lava_sim.run(ir, x)
    t_lava = time.perf_counter() - t0
    rows = []
    for engine in ("numba", "torch"):
        emulate(ir, x[:, :8], engine=engine)  # warm-up (numba compiles or loads its cache)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            counts_emu, rasters = emulate(ir, x, record=True, engine=engine)
            times.append(time.perf_counter() - t0)
        agree = float((rasters[-1] == info["output_spikes"]).mean())
        rows.append((engine, sorted(times)[1], agree, bool((counts_lava == counts_emu).all())))
    shape = "-".join(str(s) for s in [ir.input_size] + [l.n_out for l in ir.layers])
    print(f"network {shape} ({ir.synapses} synapses), {N} samples x T = {T}, {int(counts_lava.sum())} output spikes")
    print("| engine | wall s | time steps x samples / s | speed-up over Lava | output spikes equal | counts equal |")
    print("|---|---|---|---|---|---|")
    print(f"| Lava Loihi2SimCfg fixed_pt | {t_lava:.2f} | {T * N / t_lava:,.0f} | 1x | | |")
    for engine, t, agree, same in rows:
        print(f"| emulator, {engine} | {t:.3f} | {T * N / t:,.0f} | {t_lava / t:,.0f}x | {100 * agree:.2f} % | {same} |")
