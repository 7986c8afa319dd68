"""Training with a pruner inside: no pre-training, no fine-tuning.

Each epoch: fresh inputs (new Bernoulli spike trains for rate-coded data; the data's own spikes
or frames for event data; :class:`~dpap_deploy.data.encoding.InputEncoder`), Adam on the
cross-entropy of the class scores (SNN: output spike counts, surrogate gradients from Norse; ANN:
logits), the pruner's scores gathered after every batch, its rule after the epoch (DPAP from
epoch ``e0``), masks applied so a removed synapse stays exactly zero, and the network
**compacted between epochs**, so it gets cheaper to train as it shrinks. Pruners are registered
units (``train/pruners.py``): ``dpap``, ``magnitude``, ``dense``.

Training runs on ``TrainConfig.device`` (``cpu`` or a CUDA device); DPAP's statistics are kept
on the CPU in float64 (they are small) whatever the device.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from dpap_deploy.data import Dataset, rate_encode
from dpap_deploy.data.encoding import InputEncoder
from dpap_deploy.train.compact import compact, input_columns
from dpap_deploy.train.dpap import PRESETS, DPAPConfig, DPAPState
from dpap_deploy.train.models import LIFConfig, MaskedNet, SpikingMLP
from dpap_deploy.train.pruners import Pruner, dense_count, make_pruner
from dpap_deploy.train.synops import synops_per_sample


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        hidden: hidden population sizes of the default MLP (64-256-128-10).
        epochs: training epochs.
        batch_size: samples per batch.
        lr: Adam learning rate at the start; cosine annealing to 0 over ``epochs``.
        time_steps: ``T`` per sample for encoded static data; event data bring their own ``T``.
        seed: seeds weights, batches and spike encoding (CPU runs are deterministic).
        prune: run DPAP (False trains the same network dense, as a baseline).
        count_scale: SNN loss is ``cross_entropy(count_scale * spike_counts)``.
        compact_every_epoch: physically shrink the network whenever the pruner removed units.
        fixed_point_eval: for SNNs, also measure the deployed accuracy each epoch: the network
            quantised as ``loihi-sim`` exports it, run by the fixed-point emulator
            (``export/emulator.py``, equal to Lava spike for spike) on the test split.
        lif: neuron parameters of the default MLP.
        encoding: how static features enter a spiking network (``rate`` or ``current``).
        device: torch device for training (``cpu``, ``cuda``, ``cuda:1``).
        synops_penalty: ``lambda`` of the synaptic-operation loss term (SNNs; ours, beyond the
            paper, docs/dpap.md sec. 6.8): the loss is ``cross_entropy + lambda * S / N_dense``, ``S``
            the batch's mean synaptic operations per sample (each spike times the surviving synapses it
            reaches, ``train/synops.py``) and ``N_dense`` the dense network's synapses. 0 (default) is off.
    """

    hidden: Sequence[int] = (256, 128)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-3
    time_steps: int = 32
    seed: int = 0
    prune: bool = True
    count_scale: float = 0.5
    compact_every_epoch: bool = True
    fixed_point_eval: bool = True
    lif: LIFConfig = field(default_factory=LIFConfig)
    encoding: str = "rate"
    device: str = "cpu"
    synops_penalty: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


@dataclass
class TrainResult:
    model: MaskedNet            # compacted, on the CPU
    state: Optional[DPAPState]  # None when trained without DPAP
    history: List[dict]
    seconds: float


TEST_ENCODING_SEED_OFFSET = 10_007


def encoder_for(ds: Dataset, model: MaskedNet, cfg: TrainConfig) -> InputEncoder:
    """How ``ds``'s samples enter ``model`` (see :class:`~dpap_deploy.data.encoding.InputEncoder`)."""
    return InputEncoder(ds.kind, cfg.encoding if ds.kind == "static" else None,
                        cfg.time_steps if ds.kind == "static" else ds.time_steps, model.spiking)


def test_inputs(ds: Dataset, encoder: InputEncoder, seed: int) -> np.ndarray:
    """The fixed encoding of the test split (SNN ``(T, N_test, ...)``), shared by Norse and every target."""
    return encoder(ds.x_test, seed + TEST_ENCODING_SEED_OFFSET)


def test_spikes(ds: Dataset, time_steps: int, seed: int) -> np.ndarray:
    """The rate-coded test split, ``(T, N_test, F)``."""
    return rate_encode(ds.x_test, time_steps, seed + TEST_ENCODING_SEED_OFFSET)


def fixed_point_accuracy(model: MaskedNet, x_test: np.ndarray, y_test: np.ndarray, time_steps: int) -> Optional[float]:
    """Accuracy of ``model`` as deployed: quantised like the ``loihi-sim`` export and run by the
    fixed-point emulator (equal to Lava's simulator spike for spike) on ``x_test`` ``(T, N, ...)``;
    None when the network cannot be quantised or emulated (e.g. a layer no fixed point holds yet)."""
    from dpap_deploy.errors import DpapError
    from dpap_deploy.export.emulator import emulate
    from dpap_deploy.export.quantize import quantize
    from dpap_deploy.train.compact import to_ir

    try:
        ir = quantize(to_ir(compact(model)[0], time_steps))
        counts, _ = emulate(ir, x_test[: ir.time_steps])  # timestep pruning may have shortened the window
    except DpapError:
        return None
    return float((classify(counts) == y_test).mean())


def _device(model: MaskedNet) -> torch.device:
    return model.masks[0].device


def _batches(model: MaskedNet, inputs: np.ndarray, batch_size: int):
    ax = 1 if model.spiking else 0
    for i in range(0, inputs.shape[ax], batch_size):
        xb = inputs[:, i:i + batch_size] if ax == 1 else inputs[i:i + batch_size]
        yield torch.from_numpy(np.ascontiguousarray(xb)).to(_device(model))


@torch.no_grad()
def predict(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class scores ``(N, C)`` (SNN: output spike counts) for encoded inputs (SNN ``(T, N, ...)``, ANN ``(N, ...)``)."""
    model.eval()
    return np.concatenate([model(xb)[0].cpu().numpy() for xb in _batches(model, inputs, batch_size)])


@torch.no_grad()
def population_spikes(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256) -> List[np.ndarray]:
    """Every population's spikes on encoded inputs ``(T, N, ...)``, SNNs only: per weight layer
    ``(T', N, ...)`` uint8 (conv: ``(T', N, C, H, W)`` before pooling), ``T'`` the active window."""
    return scores_and_spikes(model, inputs, batch_size)[1]


@torch.no_grad()
def scores_and_spikes(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256):
    """:func:`predict` and :func:`population_spikes` of an SNN in one pass over ``inputs`` ``(T, N, ...)``.

    Returns:
        ``(scores, populations)``: class scores ``(N, C)`` (output spike counts) and per weight layer
        the spikes ``(T', N, ...)`` uint8, as the two functions give them.
    """
    model.eval()
    scores, parts = [], []
    for xb in _batches(model, inputs, batch_size):
        out, pops = model(xb)
        scores.append(out.cpu().numpy())
        parts.append([post.cpu().numpy().astype(np.uint8) for _, post in pops])
    return np.concatenate(scores), [np.concatenate([p[l] for p in parts], axis=1) for l in range(len(parts[0]))]


def classify(scores: np.ndarray) -> np.ndarray:
    """Class = argmax of the scores, the first class on ties (same rule for Norse and Lava)."""
    return np.argmax(scores, axis=1)


def spikes_per_sample(model: MaskedNet, inputs: np.ndarray, batch_size: int = 256) -> float:
    """Mean number of spikes of all populations per sample (an energy proxy), SNNs only."""
    model.eval()
    with torch.no_grad():
        total = sum(float(sum(post.sum() for _, post in model(xb)[1])) for xb in _batches(model, inputs, batch_size))
    return total / inputs.shape[1]


def _compact_in_place(model: MaskedNet, opt: torch.optim.Optimizer, pruner: Pruner):
    """Shrink ``model`` and carry the optimizer state (Adam moments) and the pruner's state along."""
    small, kept = compact(model)
    if [len(k) for k in kept] == model.widths():
        return model, opt
    device = _device(model)
    small = small.to(device)
    specs = model.specs()
    new_opt = torch.optim.Adam(small.parameters(), lr=opt.param_groups[0]["lr"])
    for l, (old, new) in enumerate(zip(model.layers, small.layers)):
        st = opt.state.get(old.weight)
        if not st:
            continue
        rows = torch.as_tensor(kept[l], device=device)
        units_in = np.arange(specs[l].n_in) if l == 0 else kept[l - 1]
        cols = torch.as_tensor(input_columns(units_in, specs[l].in_block), device=device)
        new_opt.state[new.weight] = {
            "step": st["step"].clone() if torch.is_tensor(st["step"]) else st["step"],
            "exp_avg": st["exp_avg"].index_select(0, rows).index_select(1, cols),
            "exp_avg_sq": st["exp_avg_sq"].index_select(0, rows).index_select(1, cols),
        }
    pruner.compacted(kept)
    return small, new_opt


class _Training:
    """One training run (see :func:`train`): its state and the steps of an epoch."""

    def __init__(self, ds: Dataset, cfg: TrainConfig, pruner: Pruner, model: Optional[MaskedNet], resume: Optional[dict],
                 dist, budget, encoder: Optional[InputEncoder]):
        from dpap_deploy.train.checkpoint import restore_generator

        self.ds, self.cfg, self.pruner, self.dist, self.budget = ds, cfg, pruner, dist, budget
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.history: List[dict] = []
        self.start_epoch = self.start_batch = self.run_correct = 0
        self.run_loss, self.seconds_before = 0.0, 0.0
        if resume is not None:
            self._resume(resume)
            restore_generator(self.gen, resume["generator"])
        else:
            self.model = model if model is not None else SpikingMLP([ds.n_features, *cfg.hidden, ds.n_classes], cfg.lif)
            self.model.dense_widths = self.model.widths()
            self.model.to(cfg.device)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
            pruner.start(self.model)
        self.net = dist.wrap(self.model)  # what the forward pass runs: the model itself, or the model in DDP
        self.synops_sum, self.synops_norm = 0.0, self._synops_norm()
        self.encoder = encoder or encoder_for(ds, self.model, cfg)
        self.x_test = test_inputs(ds, self.encoder, cfg.seed)

    def _resume(self, ckpt: dict) -> None:
        from dpap_deploy.errors import CheckpointError
        from dpap_deploy.train.models import model_from_config

        if ckpt["method"] != self.pruner.name:
            raise CheckpointError(f"checkpoint was trained with {ckpt['method']!r}, not {self.pruner.name!r}")
        self.model = model_from_config(ckpt["model_config"])
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.dense_widths = list(ckpt.get("dense_widths") or self.model.widths())
        self.model.to(self.cfg.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.pruner.start(self.model, ckpt.get("dpap_state"))
        if self.budget is not None and ckpt.get("budget"):
            self.budget.load_state_dict(ckpt["budget"])
        self.history = list(ckpt["history"])
        pos = ckpt["position"]
        self.start_epoch, self.start_batch = int(pos["epoch"]), int(pos["batch"])
        if self.dist.is_main:  # the epoch's loss and correct count so far, summed over the ranks: counted once
            self.run_loss, self.run_correct = float(pos["loss_sum"]), int(pos["correct"])
        self.seconds_before = float(ckpt.get("seconds", 0.0))
        if "torch_rng" in ckpt:
            torch.set_rng_state(ckpt["torch_rng"])

    def _synops_norm(self) -> int:
        """``N_dense`` of the synaptic-operation penalty (0: off).

        Raises:
            ValueError: a penalty on a network that does not spike."""
        if not self.cfg.synops_penalty:
            return 0
        if self.cfg.synops_penalty < 0:
            raise ValueError(f"synops_penalty must be >= 0, got {self.cfg.synops_penalty}")
        if not self.model.spiking:
            raise ValueError("synops_penalty: the synaptic-operation penalty counts spikes; this network is an ANN")
        return dense_count(self.model, list(range(len(self.model.layers))))

    def snapshot(self, path: str, epoch: int, batch: int, gen_state, loss_sum: float, correct: int, t0: float) -> None:
        from dpap_deploy.train.checkpoint import save_checkpoint

        cpu = {k: v.cpu() for k, v in self.model.state_dict().items()}
        save_checkpoint(path, {
            "model_config": self.model.config(), "state_dict": cpu, "dense_widths": self.model.dense_widths,
            "optimizer": _to_cpu(self.opt.state_dict()), "dpap_state": self.pruner.state_dict(),
            "budget": self.budget.state_dict() if self.budget is not None else None, "generator": gen_state,
            "position": {"epoch": epoch, "batch": batch, "loss_sum": loss_sum, "correct": correct},
            "history": self.history, "train_config": self.cfg.to_dict(), "method": self.pruner.name,
            "dpap_config": self.pruner.dpap.to_dict(), "seconds": time.perf_counter() - t0,
            "torch_rng": torch.get_rng_state()})

    def batch(self, epoch: int, b: int, idx: np.ndarray):
        """One optimiser step on samples ``idx``; returns ``(loss, correct)`` of this rank's shard."""
        cfg = self.cfg
        x = torch.from_numpy(self.encoder(self.ds.x_train[idx], (cfg.seed * 1009 + epoch) * 100_003 + b))
        y = torch.from_numpy(self.ds.y_train[idx])
        x, y, w = self.dist.shard(x, y, 1 if self.model.spiking else 0)  # this rank's slice, its loss weight
        x, y = x.to(cfg.device), y.to(cfg.device)
        self.model.dense_gradient = self.pruner.dense_gradient  # (a compaction may have replaced the model)
        scores, records = self.net(x)
        logits = cfg.count_scale * scores if self.model.spiking else scores
        loss = torch.nn.functional.cross_entropy(logits, y) if len(y) else logits.sum()  # empty shard: 0
        objective = loss
        if self.synops_norm and len(y):
            s = synops_per_sample(self.model, records)
            objective = loss + cfg.synops_penalty * s / self.synops_norm
            self.synops_sum += float(s) * len(y)
        self.opt.zero_grad()
        (objective * w).backward()
        self.opt.step()
        self.model.apply_masks()
        self.pruner.observe(records, self.dist.reduce_stats if self.dist.distributed else None)
        return float(loss) * len(y), int((scores.argmax(1) == y).sum())

    def end_epoch(self, epoch: int, loss_sum: float, correct: int, t0: float) -> dict:
        """Prune, compact, evaluate; the epoch's history record."""
        cfg, n = self.cfg, len(self.ds.y_train)
        loss_sum, correct = self.dist.sum_scalars(loss_sum, correct)
        rec = {"epoch": epoch, "method": self.pruner.name, "loss": loss_sum / n, "train_accuracy": correct / n}
        self.pruner.end_epoch(epoch, self.model, self.opt, cfg.epochs)
        self.dist.check_masks(self.model, self.pruner.state)
        if cfg.compact_every_epoch and self.pruner.compacts:
            self.model, self.opt = _compact_in_place(self.model, self.opt, self.pruner)
            self.net = self.dist.wrap(self.model)
        if self.budget is not None and epoch >= self.pruner.dpap.e0:
            from dpap_deploy.train.compact import to_ir

            rec["budget"] = self.budget.step_epoch(to_ir(compact(self.model)[0], cfg.time_steps), self.pruner.state, epoch)
        if self.dist.is_main:
            rec["test_accuracy"] = float((classify(predict(self.model, self.x_test)) == self.ds.y_test).mean())
            if cfg.fixed_point_eval and self.model.spiking:
                small = compact(self.model)[0]
                rec["fixed_point_accuracy"] = fixed_point_accuracy(small, self.x_test, self.ds.y_test,
                                                                   self.encoder.time_steps)
        rec["layers"] = {nm: {"neurons": int(w), "synapses": int(m.sum())}
                         for nm, w, m in zip(self.model.layer_names(), self.model.widths(), self.model.masks)}
        rec["synapses"] = int(sum(int(m.sum()) for m in self.model.masks))
        if self.synops_norm:  # the penalised count, mean over this epoch's training batches (since a resume)
            rec["train_synops_per_sample"] = self.dist.sum_scalars(self.synops_sum, 0)[0] / n
            self.synops_sum = 0.0
        rec["seconds"] = time.perf_counter() - t0
        self.history.append(rec)
        return rec


def _to_cpu(obj):
    """A nested optimizer state with every tensor moved to the CPU (for checkpoints)."""
    if torch.is_tensor(obj):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def train(
    ds: Dataset,
    cfg: TrainConfig,
    dpap_cfg: DPAPConfig = PRESETS["mnist-snn"],
    progress: bool = True,
    on_epoch: Optional[Callable[[dict], None]] = None,
    model: Optional[MaskedNet] = None,
    method: Optional[str] = None,
    target_sparsity: float = 0.0,
    budget=None,
    checkpoint: Optional[str] = None,
    resume: Optional[dict] = None,
    on_batch: Optional[Callable[[int, int], None]] = None,
    dist=None,
    encoder: Optional[InputEncoder] = None,
) -> TrainResult:
    """Train ``model`` (default: a :class:`SpikingMLP` with ``cfg.hidden``) on ``ds`` with a pruner.

    Args:
        method: the pruner (``train/pruners.py``): ``"dpap"`` (default when ``cfg.prune``),
            ``"dense"`` or ``"magnitude"``.
        target_sparsity: final sparsity of the prunable (non-output) layers for ``"magnitude"``.
        encoder: how samples become input; default :func:`encoder_for` (the data's kind, ``cfg.encoding``).
        budget: a :class:`dpap_deploy.budget.Budget` (DPAP on fully connected SNNs): pruning is
            pushed on the layers over their targets until the mapped network fits, then stops.
        checkpoint: write a checkpoint here after every epoch (``train/checkpoint.py``), and on
            SIGINT (Ctrl-C) finish the current batch, write one and raise
            :class:`~dpap_deploy.errors.TrainingInterrupted`. Under torchrun the ranks agree on
            the batch at which to stop.
        resume: a checkpoint (``load_checkpoint``) to continue from instead of starting afresh;
            ``model`` is then ignored (the checkpoint's is used). ``cfg``, ``dpap_cfg``,
            ``method`` and the data must be the run's own: the result equals an uninterrupted run.
        on_batch: called as ``on_batch(epoch, batch)`` after every optimiser step.
        dist: data-parallel training under torchrun, a
            :class:`dpap_deploy.train.distributed.DistributedRun` (``setup()``): each global
            batch is split over the ranks, the model runs in DDP, DPAP statistics are summed
            over the ranks and the masks checked equal after each pruning step. Only rank 0
            evaluates, writes ``checkpoint`` and calls ``on_epoch``. Default: one process.

    Raises:
        BudgetError: the budget cannot be met by any pruning of this network.
        TrainingInterrupted: SIGINT arrived while ``checkpoint`` was set.
        CheckpointError: ``resume`` does not belong to this run (method or layer count differ).
        DistributedError: with ``dist``, the ranks' masks diverged (names the layer).
        UnknownNameError: an unknown ``method``.

    Returns:
        The compacted model (on the CPU), the DPAP state, one history record per epoch (loss,
        train/test accuracy, neurons and synapses alive per layer, wall time) and the wall time (s).
    """
    from dpap_deploy.train.distributed import LocalRun

    dist = dist or LocalRun()
    pruner = make_pruner(method or ("dpap" if cfg.prune else "dense"), dpap_cfg, target_sparsity)
    run = _Training(ds, cfg, pruner, model, resume, dist, budget, encoder)
    if budget is not None:
        _start_budget(run, resume)
    t0 = time.perf_counter() - run.seconds_before
    _epochs(run, checkpoint if dist.is_main else None, progress, on_epoch, on_batch, t0)
    seconds = time.perf_counter() - t0
    small, _ = compact(run.model.cpu())
    return TrainResult(small, pruner.state, run.history, seconds)


def _start_budget(run: _Training, resume: Optional[dict]) -> None:
    from dpap_deploy.train.compact import to_ir

    if run.pruner.name != "dpap" or any(s.kind != "fc" for s in run.model.specs()) or not run.model.spiking:
        raise ValueError("a hardware budget drives DPAP on a spiking network of fully connected layers; got "
                         f"pruner {run.pruner.name!r} and layers {[s.kind for s in run.model.specs()]}")
    if resume is None:
        prunable = len(run.model.layers) - 1
        run.budget.check_feasible(list(run.model.sizes), prunable)
        run.budget.derive_targets(to_ir(run.model, run.cfg.time_steps), prunable)


def _epochs(run: _Training, checkpoint: Optional[str], progress: bool, on_epoch, on_batch, t0: float) -> None:
    """The epoch loop, with SIGINT turned into a checkpoint and :class:`TrainingInterrupted`."""
    import signal
    import threading

    from tqdm.auto import tqdm

    from dpap_deploy.errors import TrainingInterrupted
    from dpap_deploy.train.checkpoint import generator_state

    cfg, dist, n = run.cfg, run.dist, len(run.ds.y_train)
    stop = threading.Event()  # set by SIGINT: finish the batch, checkpoint, stop
    old_handler = None
    if (checkpoint is not None or dist.distributed) and threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        bar = tqdm(range(run.start_epoch, cfg.epochs), desc=f"train ({run.pruner.name})", unit="epoch",
                   disable=None if progress else True, leave=False, initial=run.start_epoch, total=cfg.epochs)
        for epoch in bar:
            for g in run.opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, cfg.epochs)))
            run.model.train()
            gen_at_start = generator_state(run.gen)
            order = torch.randperm(n, generator=run.gen).numpy()
            first = run.start_batch if epoch == run.start_epoch else 0
            loss_sum, correct = (run.run_loss, run.run_correct) if epoch == run.start_epoch else (0.0, 0)
            for b, i in enumerate(range(0, n, cfg.batch_size)):
                if b < first:
                    continue
                dl, dc = run.batch(epoch, b, order[i:i + cfg.batch_size])
                loss_sum, correct = loss_sum + dl, correct + dc
                if on_batch is not None:
                    on_batch(epoch, b)
                if dist.any_flag(stop.is_set()):  # every rank stops at the same batch
                    done_loss, done_correct = dist.sum_scalars(loss_sum, correct)  # the epoch so far, all ranks
                    if checkpoint is not None:
                        run.snapshot(checkpoint, epoch, b + 1, gen_at_start, done_loss, int(done_correct), t0)
                    raise TrainingInterrupted(checkpoint or "(no checkpoint on this rank)", epoch, b + 1)
            rec = run.end_epoch(epoch, loss_sum, correct, t0)
            if checkpoint is not None:
                run.snapshot(checkpoint, epoch + 1, 0, generator_state(run.gen), 0.0, 0, t0)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec.get('test_accuracy', float('nan')):.3f}",
                            synapses=rec["synapses"])
            if on_epoch is not None and dist.is_main:
                on_epoch(rec)
            if dist.any_flag(stop.is_set()):  # SIGINT during the epoch's evaluation: the checkpoint resumes it
                raise TrainingInterrupted(checkpoint or "(no checkpoint on this rank)", epoch + 1, 0)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
