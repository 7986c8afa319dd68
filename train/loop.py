"""Training with DPAP inside: no pre-training, no fine-tuning.

Each epoch: fresh Bernoulli spike trains of the training set, Adam on the
cross-entropy of the output spike counts (surrogate gradients from Norse), DPAP scores
accumulated after every batch, the DPAP rule after the epoch (from epoch ``e0``), masks
applied so a removed synapse stays exactly zero. At the end the network is compacted.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from dpap_deploy.data import Dataset, rate_encode
from dpap_deploy.train.compact import compact
from dpap_deploy.train.dpap import PRESETS, DPAPConfig, DPAPState
from dpap_deploy.train.models import LIFConfig, SpikingMLP


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        hidden: hidden population sizes (the default network is 64-256-128-10).
        epochs: training epochs.
        batch_size: samples per batch.
        lr: Adam learning rate at the start; cosine annealing to 0 over ``epochs``.
        time_steps: ``T`` per sample.
        seed: seeds weights, batches and spike encoding (CPU runs are deterministic).
        prune: run DPAP (False trains the same network dense, as a baseline).
        count_scale: the loss is ``cross_entropy(count_scale * spike_counts)``.
    """

    hidden: Sequence[int] = (256, 128)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    time_steps: int = 32
    seed: int = 0
    prune: bool = True
    count_scale: float = 0.5
    lif: LIFConfig = field(default_factory=LIFConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


@dataclass
class TrainResult:
    model: SpikingMLP           # compacted
    state: Optional[DPAPState]  # None when trained dense
    history: List[dict]
    seconds: float


TEST_ENCODING_SEED_OFFSET = 10_007


def test_spikes(ds: Dataset, time_steps: int, seed: int) -> np.ndarray:
    """The fixed spike encoding of the test split, ``(T, N_test, F)``, shared by Norse and Lava."""
    return rate_encode(ds.x_test, time_steps, seed + TEST_ENCODING_SEED_OFFSET)


@torch.no_grad()
def predict(model: SpikingMLP, spikes: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Output spike counts ``(N, C)`` for input spikes ``(T, N, F)``."""
    model.eval()
    out = []
    for i in range(0, spikes.shape[1], batch_size):
        counts, _ = model(torch.from_numpy(spikes[:, i:i + batch_size]))
        out.append(counts.numpy())
    return np.concatenate(out).astype(np.int64)


def classify(counts: np.ndarray) -> np.ndarray:
    """Class = argmax of spike counts, the first class on ties (same rule for Norse and Lava)."""
    return np.argmax(counts, axis=1)


def train(
    ds: Dataset,
    cfg: TrainConfig,
    dpap_cfg: DPAPConfig = PRESETS["mnist-snn"],
    progress: bool = True,
    on_epoch: Optional[Callable[[dict], None]] = None,
) -> TrainResult:
    """Train a :class:`SpikingMLP` on ``ds`` with DPAP (unless ``cfg.prune`` is False).

    Returns:
        The compacted model, the DPAP state, one history record per epoch
        (loss, train/test accuracy, neurons and synapses alive per layer) and the wall time (s).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    sizes = [ds.n_features, *cfg.hidden, ds.n_classes]
    model = SpikingMLP(sizes, cfg.lif)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    state = DPAPState(sizes, dpap_cfg) if cfg.prune else None
    x_test = test_spikes(ds, cfg.time_steps, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: List[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    n = len(ds.y_train)
    for epoch in bar:
        model.train()
        x_ep = rate_encode(ds.x_train, cfg.time_steps, cfg.seed * 1000 + epoch)
        order = torch.randperm(n, generator=gen).numpy()
        loss_sum, correct = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x = torch.from_numpy(x_ep[:, idx])
            y = torch.from_numpy(ds.y_train[idx])
            counts, spikes = model(x)
            loss = torch.nn.functional.cross_entropy(cfg.count_scale * counts, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.apply_masks()
            if state is not None:
                state.observe(x, spikes)
            loss_sum += float(loss) * len(idx)
            correct += int((counts.argmax(1) == y).sum())
        sched.step()
        rec = {"epoch": epoch, "loss": loss_sum / n, "train_accuracy": correct / n}
        if state is not None:
            rec["layers"] = state.end_epoch(epoch)
            state.apply(model, opt)
        rec["test_accuracy"] = float((classify(predict(model, x_test)) == ds.y_test).mean())
        rec["synapses"] = int(sum(int(m.sum()) for m in model.masks))
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['test_accuracy']:.3f}",
                        synapses=rec["synapses"])
        if on_epoch is not None:
            on_epoch(rec)
    seconds = time.perf_counter() - t0
    small, _ = compact(model)
    return TrainResult(small, state, history, seconds)
