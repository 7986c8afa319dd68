"""Conv SNNs on event-digits through the whole deployment: Norse, Lava (fixed point) and the
emulator on the full test split, dense and DPAP-pruned.

    .venv/bin/python benchmarks/conv_export_check.py [--epochs 15]

Model 8C3-AP2-16C3-AP2-64FC-10FC on 20x20 event-digits, T = 10 (the `snn-cnn` setup of
`dpap_digits.py`); DPAP with the `cifar-snn` constants (docs/dpap.md sec. 11.2), lr 1e-2. Reports accuracy
in Norse (float), Lava `Loihi2SimCfg(select_tag="fixed_pt")` and the emulator, and the fraction
of equal output spikes Lava vs emulator over every sample and step.
"""
import lava.magma.core.process.process  # noqa: F401  (Lava first: it fixes multiprocessing's start method)

import argparse
import time

import numpy as np
import torch

from dpap_deploy.data.event_digits import load_event_digits
from dpap_deploy.export import lava_sim
from dpap_deploy.export.emulator import emulate
from dpap_deploy.export.quantize import quantize
from dpap_deploy.train.compact import to_ir
from dpap_deploy.train.dpap import PRESETS
from dpap_deploy.train.loop import TrainConfig, classify, predict, train
from dpap_deploy.train.models import SpikingCNN

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(2)
    ds = load_event_digits(time_steps=10)
    x = np.ascontiguousarray(ds.x_test.swapaxes(0, 1))  # (T, N, C, H, W)
    print("| model | hidden weights as exported (each folded-pool weight counted 4x) | Norse % | Lava fixed % | emulator % | "
          "output spikes equal Lava vs emulator | Lava s | emulator s |")
    print("|---|---|---|---|---|---|---|---|")
    for method in ("dense", "dpap"):
        torch.manual_seed(0)
        model = SpikingCNN(ds.x_train.shape[2:], (8, 16), (64,), ds.n_classes)
        res = train(ds, TrainConfig(epochs=args.epochs, time_steps=10, lr=1e-2, seed=0), PRESETS["cifar-snn"],
                    progress=False, model=model, method=method)
        m = res.model
        norse = float((classify(predict(m, x)) == ds.y_test).mean())
        ir = quantize(to_ir(m, 10))
        t0 = time.perf_counter()
        counts, info = lava_sim.run(ir, x)
        t_lava = time.perf_counter() - t0
        t0 = time.perf_counter()
        emu, rasters = emulate(ir, x, record=True)
        t_emu = time.perf_counter() - t0
        agree = float((rasters[-1] == info["output_spikes"]).mean())
        syn = sum(int(np.count_nonzero(l.masked_weight())) for l in ir.layers[:-1])  # as exported
        print(f"| {method} {'-'.join(str(l.out_shape[0]) if l.kind == 'conv' else str(l.n_out) for l in ir.layers)} "
              f"| {syn} | {100 * norse:.2f} | {100 * (classify(counts) == ds.y_test).mean():.2f} | "
              f"{100 * (classify(emu) == ds.y_test).mean():.2f} | {100 * agree:.2f} % of "
              f"{int(info['output_spikes'].sum(dtype=np.int64))} spikes (counts {int(counts.sum())}) | {t_lava:.1f} | {t_emu:.2f} |", flush=True)
