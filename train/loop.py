"""Training with DPAP inside: no pre-training, no fine-tuning.

Each epoch: fresh inputs (Bernoulli spike trains for rate-coded data), Adam on the
cross-entropy of the class scores (SNN: output spike counts, surrogate gradients from
Norse; ANN: logits), DPAP scores accumulated after every batch, the DPAP rule after the
epoch (from epoch ``e0``), masks applied so a removed synapse stays exactly zero, and
the network **compacted between epochs**, so it gets cheaper to train as it shrinks.

``method="magnitude"`` trains the same network with gradual global magnitude pruning
(``torch.nn.utils.prune.global_unstructured``, L1) to a given final sparsity instead, the
peer a user would pick (Zhu & Gupta's cubic schedule from ``e0`` to the last epoch).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from dpap_deploy.data import Dataset, rate_encode
from dpap_deploy.train.compact import compact, input_columns
from dpap_deploy.train.dpap import PRESETS, DPAPConfig, DPAPState
from dpap_deploy.train.models import LIFConfig, MaskedNet, SpikingMLP


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        hidden: hidden population sizes of the default MLP (64-256-128-10).
        epochs: training epochs.
        batch_size: samples per batch.
        lr: Adam learning rate at the start; cosine annealing to 0 over ``epochs``.
        time_steps: ``T`` per sample (rate coding); event frames bring their own ``T``.
        seed: seeds weights, batches and spike encoding (CPU runs are deterministic).
        prune: run DPAP (False trains the same network dense, as a baseline).
        count_scale: SNN loss is ``cross_entropy(count_scale * spike_counts)``.
        compact_every_epoch: physically shrink the network whenever DPAP removed units.
        fixed_point_eval: for spiking MLPs, also measure the deployed accuracy each epoch: the
            network quantised as ``loihi-sim`` exports it, run by the fixed-point emulator
            (``export/emulator.py``, equal to Lava spike for spike) on the test split.
    """

    hidden: Sequence[int] = (256, 128)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    time_steps: int = 32
    seed: int = 0
    prune: bool = True
    count_scale: float = 0.5
    compact_every_epoch: bool = True
    fixed_point_eval: bool = True
    lif: LIFConfig = field(default_factory=LIFConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


@dataclass
class TrainResult:
    model: MaskedNet            # compacted
    state: Optional[DPAPState]  # None when trained without DPAP
    history: List[dict]
    seconds: float


TEST_ENCODING_SEED_OFFSET = 10_007


def encode(x: np.ndarray, kind: str, time_steps: int, seed: int) -> np.ndarray:
    """Model input for samples ``x``.

    ``kind``: ``"rate"`` (``x`` ``(B, F)`` intensities -> Bernoulli spikes ``(T, B, F)``),
    ``"frames"`` (``x`` ``(B, T, C, H, W)`` event frames -> ``(T, B, C, H, W)``) or
    ``"static"`` (ANN input, unchanged ``(B, ...)``).
    """
    if kind == "rate":
        return rate_encode(x, time_steps, seed)
    if kind == "frames":
        return np.ascontiguousarray(np.swapaxes(x, 0, 1)).astype(np.float32)
    if kind == "static":
        return x.astype(np.float32)
    raise ValueError(f"unknown input kind {kind!r}")


def test_spikes(ds: Dataset, time_steps: int, seed: int) -> np.ndarray:
    """The fixed spike encoding of the test split, ``(T, N_test, F)``, shared by Norse and Lava."""
    return rate_encode(ds.x_test, time_steps, seed + TEST_ENCODING_SEED_OFFSET)


def fixed_point_accuracy(model: SpikingMLP, x_test: np.ndarray, y_test: np.ndarray, time_steps: int) -> Optional[float]:
    """Accuracy of ``model`` as deployed: quantised like the ``loihi-sim`` export and run by the
    batched fixed-point emulator (equal to Lava's simulator spike for spike) on ``x_test`` ``(T, N, F)``."""
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize
    from dpap_deploy.train.compact import to_ir

    from dpap_deploy.errors import DpapError

    try:
        ir = quantize(to_ir(compact(model)[0], time_steps))
        counts, _ = emulate(ir, x_test[: ir.time_steps])  # timestep pruning may have shortened the window
    except DpapError:  # e.g. a layer no fixed point can hold yet: no deployed figure this epoch
        return None
    return float((classify(counts) == y_test).mean())


def _batch_axis(model: MaskedNet) -> int:
    return 1 if model.spiking else 0


@torch.no_grad()
def predict(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class scores ``(N, C)`` (SNN: output spike counts) for encoded inputs (SNN ``(T, N, ...)``, ANN ``(N, ...)``)."""
    model.eval()
    ax = _batch_axis(model)
    out = []
    for i in range(0, inputs.shape[ax], batch_size):
        xb = inputs[:, i:i + batch_size] if ax == 1 else inputs[i:i + batch_size]
        scores, _ = model(torch.from_numpy(np.ascontiguousarray(xb)))
        out.append(scores.numpy())
    return np.concatenate(out)


@torch.no_grad()
def population_spikes(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256) -> List[np.ndarray]:
    """Every population's spikes on encoded inputs ``(T, N, ...)``, SNNs only: per weight layer
    ``(T', N, ...)`` uint8 (conv: ``(T', N, C, H, W)`` before pooling), ``T'`` the active window."""
    model.eval()
    parts: List[List[np.ndarray]] = []
    for i in range(0, inputs.shape[1], batch_size):
        _, records = model(torch.from_numpy(np.ascontiguousarray(inputs[:, i:i + batch_size])))
        parts.append([post.numpy().astype(np.uint8) for _, post in records])
    return [np.concatenate([p[l] for p in parts], axis=1) for l in range(len(parts[0]))]


def classify(scores: np.ndarray) -> np.ndarray:
    """Class = argmax of the scores, the first class on ties (same rule for Norse and Lava)."""
    return np.argmax(scores, axis=1)


def spikes_per_sample(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256) -> float:
    """Mean number of spikes of all populations per sample (an energy proxy), SNNs only."""
    model.eval()
    total, n = 0.0, inputs.shape[1]
    with torch.no_grad():
        for i in range(0, n, batch_size):
            _, records = model(torch.from_numpy(np.ascontiguousarray(inputs[:, i:i + batch_size])))
            total += float(sum(post.sum() for _, post in records))
    return total / n


def _compact_in_place(model: MaskedNet, opt: torch.optim.Optimizer, state: Optional[DPAPState]):
    """Shrink ``model`` and carry the optimizer state (Adam moments) and DPAP state along."""
    small, kept = compact(model)
    if [len(k) for k in kept] == model.widths():
        return model, opt
    specs = model.specs()
    new_opt = torch.optim.Adam(small.parameters(), lr=opt.param_groups[0]["lr"])
    for l, (old, new) in enumerate(zip(model.layers, small.layers)):
        st = opt.state.get(old.weight)
        if not st:
            continue
        rows = torch.as_tensor(kept[l])
        units_in = np.arange(specs[l].n_in) if l == 0 else kept[l - 1]
        cols = torch.as_tensor(input_columns(units_in, specs[l].in_block))
        new_opt.state[new.weight] = {
            "step": st["step"].clone() if torch.is_tensor(st["step"]) else st["step"],
            "exp_avg": st["exp_avg"].index_select(0, rows).index_select(1, cols),
            "exp_avg_sq": st["exp_avg_sq"].index_select(0, rows).index_select(1, cols),
        }
    if state is not None:
        state.compact(kept)
    return small, new_opt


def _magnitude_step(model: MaskedNet, layers: List[int], target: float, epoch: int, e0: int, epochs: int) -> None:
    """Gradual global L1 magnitude pruning of ``layers`` toward ``target`` sparsity (cubic schedule)."""
    import torch.nn.utils.prune as prune

    if epoch < e0:
        return
    span = max(1, epochs - 1 - e0)
    frac = target * (1.0 - (1.0 - min(1.0, (epoch - e0 + 1) / span)) ** 3)
    total = sum(model.masks[l].numel() for l in layers)
    amount = int(round(frac * total))
    if amount <= 0:
        return
    params = [(model.layers[l], "weight") for l in layers]
    with torch.no_grad():
        for l in layers:  # already-pruned weights are exactly zero, so L1 keeps them pruned
            model.layers[l].weight.mul_(model.masks[l])
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    with torch.no_grad():
        for l in layers:
            layer = model.layers[l]
            model.masks[l].copy_(model.masks[l] & layer.weight_mask.bool())
            prune.remove(layer, "weight")
    model.apply_masks()


def train(
    ds: Dataset,
    cfg: TrainConfig,
    dpap_cfg: DPAPConfig = PRESETS["mnist-snn"],
    progress: bool = True,
    on_epoch: Optional[Callable[[dict], None]] = None,
    model: Optional[MaskedNet] = None,
    input_kind: str = "rate",
    method: Optional[str] = None,
    target_sparsity: float = 0.0,
    budget=None,
    checkpoint: Optional[str] = None,
    resume: Optional[dict] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
    dist=None,
) -> TrainResult:
    """Train ``model`` (default: a :class:`SpikingMLP` with ``cfg.hidden``) on ``ds``.

    Args:
        method: ``"dpap"`` (default when ``cfg.prune``), ``"dense"`` or ``"magnitude"``.
        target_sparsity: final sparsity of the prunable (non-output) layers for ``"magnitude"``.
        input_kind: see :func:`encode`.
        budget: a :class:`dpap_deploy.budget.Budget` (SNN MLPs with DPAP): pruning is pushed on
            the layers over their targets until the mapped network fits, then stops.
        checkpoint: write a checkpoint here after every epoch (``train/checkpoint.py``), and on
            SIGINT (Ctrl-C) finish the current batch, write one and raise
            :class:`~dpap_deploy.errors.TrainingInterrupted`.
        resume: a checkpoint (``load_checkpoint``) to continue from instead of starting afresh;
            ``model`` is then ignored (the checkpoint's is used). ``cfg``, ``dpap_cfg``,
            ``method`` and the data must be the run's own: the result equals an uninterrupted run.
        on_batch: called as ``on_batch(epoch, batch)`` after every optimiser step.
        dist: data-parallel training under torchrun, a
            :class:`dpap_deploy.train.distributed.DistributedRun` (``setup()``): each global
            batch is split over the ranks, the model runs in DDP, DPAP statistics are summed
            over the ranks and the masks checked equal after each pruning step. Only rank 0
            evaluates (``test_accuracy``, ``fixed_point_accuracy``), writes ``checkpoint`` and
            calls ``on_epoch``. Default: one process.

    Raises:
        BudgetError: the budget cannot be met by any pruning of this network.
        TrainingInterrupted: SIGINT arrived while ``checkpoint`` was set.
        CheckpointError: ``resume`` does not belong to this run (method or layer count differ).
        DistributedError: with ``dist``, the ranks' masks diverged (names the layer).

    Returns:
        The compacted model, the DPAP state, one history record per epoch (loss, train/test
        accuracy, neurons and synapses alive per layer, wall time) and the wall time (s).
    """
    import signal
    import threading

    from tqdm.auto import tqdm

    from dpap_deploy.errors import CheckpointError, TrainingInterrupted
    from dpap_deploy.train.checkpoint import generator_state, restore_generator, save_checkpoint
    from dpap_deploy.train.distributed import LocalRun

    dist = dist or LocalRun()
    if not dist.is_main:
        checkpoint = None  # rank 0 writes the run's checkpoint

    method = method or ("dpap" if cfg.prune else "dense")
    if method not in ("dpap", "dense", "magnitude"):
        raise ValueError(f"method must be dpap, dense or magnitude, got {method!r}")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if resume is not None:
        from dpap_deploy.train.models import model_from_config

        if resume["method"] != method:
            raise CheckpointError(f"checkpoint was trained with {resume['method']!r}, not {method!r}")
        model = model_from_config(resume["model_config"])
        model.load_state_dict(resume["state_dict"])
        model.dense_widths = list(resume.get("dense_widths") or model.widths())
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        opt.load_state_dict(resume["optimizer"])
        state = DPAPState.from_state_dict(resume["dpap_state"]) if resume.get("dpap_state") else None
        if budget is not None and resume.get("budget"):
            budget.load_state_dict(resume["budget"])
        restore_generator(gen, resume["generator"])
        history: List[dict] = list(resume["history"])
        start_epoch, start_batch = int(resume["position"]["epoch"]), int(resume["position"]["batch"])
        run_loss, run_correct = float(resume["position"]["loss_sum"]), int(resume["position"]["correct"])
        if "torch_rng" in resume:
            torch.set_rng_state(resume["torch_rng"])
    else:
        if model is None:
            model = SpikingMLP([ds.n_features, *cfg.hidden, ds.n_classes], cfg.lif)
        model.dense_widths = model.widths()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        state = DPAPState(model.specs(), dpap_cfg) if method == "dpap" else None
        history = []
        start_epoch, start_batch, run_loss, run_correct = 0, 0, 0.0, 0
    net = dist.wrap(model)  # what the forward pass runs: model itself, or model in DDP
    prunable = list(range(len(model.layers) - 1))
    if budget is not None:
        if method != "dpap" or not isinstance(model, SpikingMLP):
            raise ValueError("a hardware budget drives DPAP on a SpikingMLP; got method "
                             f"{method!r} and {type(model).__name__}")
        from dpap_deploy.train.compact import to_ir

        if resume is None:
            budget.check_feasible(model.sizes, len(prunable))
            budget.derive_targets(to_ir(model, cfg.time_steps), len(prunable))
    x_test = encode(ds.x_test, input_kind, cfg.time_steps, cfg.seed + TEST_ENCODING_SEED_OFFSET)
    t0 = time.perf_counter() - (float(resume.get("seconds", 0.0)) if resume is not None else 0.0)
    n = len(ds.y_train)

    def snapshot(epoch: int, batch: int, gen_at_epoch_start, loss_sum: float, correct: int) -> None:
        save_checkpoint(checkpoint, {
            "model_config": model.config(), "state_dict": model.state_dict(), "dense_widths": model.dense_widths,
            "optimizer": opt.state_dict(), "dpap_state": state.state_dict() if state is not None else None,
            "budget": budget.state_dict() if budget is not None else None, "generator": gen_at_epoch_start,
            "position": {"epoch": epoch, "batch": batch, "loss_sum": loss_sum, "correct": correct},
            "history": history, "train_config": cfg.to_dict(), "method": method, "dpap_config": dpap_cfg.to_dict(),
            "seconds": time.perf_counter() - t0, "torch_rng": torch.get_rng_state()})

    stop = threading.Event()  # set by SIGINT: finish the batch, checkpoint, stop
    old_handler = None
    if checkpoint is not None and threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train ({method})", unit="epoch", disable=None if progress else True,
                   leave=False, initial=start_epoch, total=cfg.epochs)
        for epoch in bar:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, cfg.epochs)))
            model.train()
            gen_at_start = generator_state(gen)
            order = torch.randperm(n, generator=gen).numpy()
            first = start_batch if epoch == start_epoch else 0
            loss_sum, correct = (run_loss, run_correct) if epoch == start_epoch else (0.0, 0)
            for b, i in enumerate(range(0, n, cfg.batch_size)):
                if b < first:
                    continue
                idx = order[i:i + cfg.batch_size]
                x = torch.from_numpy(encode(ds.x_train[idx], input_kind, cfg.time_steps,
                                            (cfg.seed * 1009 + epoch) * 100_003 + b))
                y = torch.from_numpy(ds.y_train[idx])
                x, y, w = dist.shard(x, y, _batch_axis(model))  # this rank's slice, its loss weight
                scores, records = net(x)
                logits = cfg.count_scale * scores if model.spiking else scores
                loss = torch.nn.functional.cross_entropy(logits, y) if len(y) else logits.sum()  # empty shard: 0
                opt.zero_grad()
                (loss * w).backward()
                opt.step()
                model.apply_masks()
                if state is not None:
                    state.observe(records, dist.reduce_stats if dist.distributed else None)
                loss_sum += float(loss) * len(y)
                correct += int((scores.argmax(1) == y).sum())
                if on_batch is not None:
                    on_batch(epoch, b)
                if stop.is_set():
                    snapshot(epoch, b + 1, gen_at_start, loss_sum, correct)
                    raise TrainingInterrupted(checkpoint, epoch, b + 1)
            loss_sum, correct = dist.sum_scalars(loss_sum, correct)
            rec = {"epoch": epoch, "method": method, "loss": loss_sum / n, "train_accuracy": correct / n}
            if state is not None:
                state.end_epoch(epoch)
                state.apply(model, opt)
            elif method == "magnitude":
                _magnitude_step(model, prunable, target_sparsity, epoch, dpap_cfg.e0, cfg.epochs)
            dist.check_masks(model, state)
            if cfg.compact_every_epoch and method != "dense":
                model, opt = _compact_in_place(model, opt, state)
                net = dist.wrap(model)
            if budget is not None and epoch >= dpap_cfg.e0:
                from dpap_deploy.train.compact import to_ir

                rec["budget"] = budget.step_epoch(to_ir(compact(model)[0], cfg.time_steps), state, epoch)
            if dist.is_main:
                rec["test_accuracy"] = float((classify(predict(model, x_test)) == ds.y_test).mean())
            if dist.is_main and cfg.fixed_point_eval and isinstance(model, SpikingMLP) and input_kind == "rate":
                rec["fixed_point_accuracy"] = fixed_point_accuracy(model, x_test, ds.y_test, cfg.time_steps)
            rec["layers"] = {nm: {"neurons": int(w), "synapses": int(m.sum())}
                             for nm, w, m in zip(model.layer_names(), model.widths(), model.masks)}
            rec["synapses"] = int(sum(int(m.sum()) for m in model.masks))
            rec["seconds"] = time.perf_counter() - t0
            history.append(rec)
            if checkpoint is not None:
                snapshot(epoch + 1, 0, generator_state(gen), 0.0, 0)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec.get('test_accuracy', float('nan')):.3f}",
                            synapses=rec["synapses"])
            if on_epoch is not None and dist.is_main:
                on_epoch(rec)
            if stop.is_set():  # SIGINT during the epoch's evaluation: the checkpoint just written resumes it
                raise TrainingInterrupted(checkpoint, epoch + 1, 0)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    seconds = time.perf_counter() - t0
    small, _ = compact(model)
    return TrainResult(small, state, history, seconds)
