"""Data-parallel DPAP training under ``torchrun`` (PyTorch DistributedDataParallel).

Every rank holds the whole network and the whole DPAP state; what is split is each
*global* batch (``TrainConfig.batch_size`` samples, drawn in the same order on every rank
from the same seed): rank ``r`` of ``W`` takes samples ``[r*B//W, (r+1)*B//W)`` of it, so
the ranks together see exactly the batch a single process sees. Three things keep the
ranks equal to each other and to that single process:

* **Gradients**: ``DistributedDataParallel`` averages them over the ranks. Cross-entropy
  is a mean over the *local* samples, so rank ``r``'s loss is multiplied by
  ``W * B_r / B`` (:meth:`DistributedRun.shard` returns that weight): the average of the
  ranks' gradients is then the gradient of the mean over the global batch, also for an
  uneven split (the last batch of an epoch) and an empty shard (``B < W``, weight 0).
* **DPAP statistics** (docs/dpap.md secs. 2-3, :meth:`DPAPState.observe`): ``M += sum_i
  (tr_i (tr_i - theta))^T tr_pre_i`` and ``A += sum_i tr_i`` are sums over samples and
  ``theta``'s update is the batch mean ``sum_i tr_i / B``: each rank computes its local
  sums and sample count, :meth:`DistributedRun.reduce_stats` all-reduces them (sum), and
  every rank applies the same global increments, once per global batch (``k`` counts
  global batches). The pruning rule then runs on identical state on every rank.
* **Masks**: after each pruning step :meth:`DistributedRun.check_masks` compares every
  layer's mask (model and DPAP state) across ranks and raises
  :class:`DistributedError` naming the layer if they differ, on every rank at once
  (no rank is left waiting in a collective).

The model is wrapped in ``DistributedDataParallel`` (:meth:`DistributedRun.wrap`) and
wrapped again after every compaction, because compaction builds a new module with new
parameters. Only rank 0 (``is_main``) evaluates and writes files; the training loop
calls ``on_epoch`` on rank 0 only.

Reproducibility: the ranks' results are bitwise identical to each other (every rank
applies the same all-reduced numbers; tested with 2 ranks), but not bitwise equal to a
single process: the gradient and statistic sums are added in another order (float32
gradients differ by ~1e-7 relative). See ``tests/test_ddp.py`` for what is measured.
The nccl path (``device="cuda"``, ``--device cuda``) is written but untested here (no GPU).

Usage::

    python -m torch.distributed.run --nproc_per_node 2 -m dpap_deploy.cli --target loihi-sim ...

:func:`setup` returns a :class:`DistributedRun` under ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set, world size > 1) and a no-op
:class:`LocalRun` otherwise; ``train(..., dist=...)`` takes either.
"""
from __future__ import annotations

import datetime
import os
from typing import List, Mapping, Optional, Tuple

import torch

from dpap_deploy.errors import DpapError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(DpapError):
    """Distributed training is misconfigured (environment, backend) or the ranks diverged."""


def _env_int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    text = env.get(name)
    if text is None:
        if default is None:
            raise DistributedError(f"environment variable {name} is not set")
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name} must be an integer, got {text!r}") from None


def under_torchrun(env: Optional[Mapping[str, str]] = None) -> bool:
    """True when the process was started by ``torchrun`` (or any launcher that sets
    ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``).

    Raises:
        DistributedError: some of those variables are set but not all (names the missing ones).
    """
    env = os.environ if env is None else env
    present = [v for v in TORCHRUN_VARS if v in env]
    if present and len(present) < len(TORCHRUN_VARS):
        missing = [v for v in TORCHRUN_VARS if v not in env]
        raise DistributedError(f"{', '.join(present)} set but {', '.join(missing)} not: start distributed training "
                               "with torchrun (python -m torch.distributed.run), which sets all of "
                               f"{', '.join(TORCHRUN_VARS)}")
    return bool(present)


def local_world_size(env: Optional[Mapping[str, str]] = None) -> int:
    """Processes on this machine (``LOCAL_WORLD_SIZE`` under torchrun, else 1): divide CPU threads by it."""
    env = os.environ if env is None else env
    return max(1, _env_int(env, "LOCAL_WORLD_SIZE", 1)) if under_torchrun(env) else 1


def shard_bounds(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """``[lo, hi)``: rank ``rank``'s contiguous slice of a global batch of ``n`` samples.

    Slices are as equal as possible (sizes differ by at most 1), cover ``0..n`` exactly
    once in rank order, and are empty for some ranks when ``n < world_size``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return rank * n // world_size, (rank + 1) * n // world_size


class LocalRun:
    """Single-process training: every hook is a no-op (the default of ``train(dist=...)``).

    Attributes:
        rank, world_size, local_rank: 0, 1, 0.
        is_main: True (this process evaluates and writes files).
    """

    rank = 0
    world_size = 1
    local_rank = 0
    is_main = True
    distributed = False

    def shard(self, x: torch.Tensor, y: torch.Tensor, axis: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
        """The whole batch, loss weight 1.0 (see :meth:`DistributedRun.shard`)."""
        return x, y, 1.0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` itself."""
        return model

    def reduce_stats(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """``tensors`` unchanged (one process: the local sums are the global ones)."""
        return tensors

    def sum_scalars(self, *values: float) -> Tuple[float, ...]:
        """``values`` unchanged."""
        return tuple(values)

    def check_masks(self, model, state=None) -> None:
        """Nothing to compare."""

    def any_flag(self, flag: bool) -> bool:
        """``flag`` itself (one process)."""
        return bool(flag)

    def close(self) -> None:
        """Nothing to release."""


class DistributedRun(LocalRun):
    """One rank of a data-parallel run; joins the process group on construction.

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); default: nccl when ``device`` is a
            CUDA device, else gloo.
        device: where the model trains; ``"cpu"`` (what ``train/loop.py`` does) or
            ``"cuda"`` (then this rank uses GPU ``LOCAL_RANK``).
        env: environment to read (default ``os.environ``): ``RANK``, ``WORLD_SIZE``,
            ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
        timeout_s: how long a collective waits for the other ranks before failing.

    Raises:
        DistributedError: not under torchrun, an environment variable is malformed, or
            nccl was asked for without CUDA.
    """

    distributed = True

    def __init__(self, backend: Optional[str] = None, device: str = "cpu", env: Optional[Mapping[str, str]] = None,
                 timeout_s: float = 1800.0):
        import torch.distributed as tdist

        env = os.environ if env is None else env
        if not under_torchrun(env):
            raise DistributedError(f"not started by torchrun: none of {', '.join(TORCHRUN_VARS)} is set")
        self.rank = _env_int(env, "RANK")
        self.world_size = _env_int(env, "WORLD_SIZE")
        self.local_rank = _env_int(env, "LOCAL_RANK", 0)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise DistributedError(f"RANK={self.rank} and WORLD_SIZE={self.world_size}: need 0 <= RANK < WORLD_SIZE")
        self.is_main = self.rank == 0
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise DistributedError("device cuda requested but CUDA is not available")
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        self.backend = backend or ("nccl" if self.device.type == "cuda" else "gloo")
        if self.backend == "nccl" and self.device.type != "cuda":
            raise DistributedError("backend nccl needs device cuda; CPU training uses gloo")
        if not tdist.is_available():
            raise DistributedError("this torch build has no torch.distributed")
        self._owns_group = not tdist.is_initialized()
        if self._owns_group:
            tdist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size,
                                     timeout=datetime.timedelta(seconds=timeout_s))
        self._tdist = tdist

    def __repr__(self) -> str:
        return f"DistributedRun(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    # -- batches and loss -------------------------------------------------------------------
    def shard(self, x: torch.Tensor, y: torch.Tensor, axis: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's slice of a global batch, and the weight of its mean loss.

        Args:
            x: the global batch's input, batch along ``axis`` (SNN ``(T, B, ...)``: 1; ANN ``(B, ...)``: 0).
            y: its labels ``(B,)``.
            axis: the batch axis of ``x``.

        Returns:
            ``(x_r, y_r, w)``: samples :func:`shard_bounds` of ``x`` and ``y`` and
            ``w = world_size * B_r / B``. Back-propagate ``w * mean local loss`` (0 for an
            empty shard): DDP's average of the ranks' gradients is then the gradient of the
            mean loss over the global batch.

        Raises:
            ValueError: ``x`` and ``y`` disagree on the batch size.
        """
        n = int(y.shape[0])
        if int(x.shape[axis]) != n:
            raise ValueError(f"input has {x.shape[axis]} samples on axis {axis}, labels {n}")
        lo, hi = shard_bounds(n, self.rank, self.world_size)
        return x.narrow(axis, lo, hi - lo), y[lo:hi], self.world_size * (hi - lo) / n

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in ``DistributedDataParallel`` (call again after every compaction).

        The module's parameters and buffers are broadcast from rank 0 on wrapping (they
        are equal anyway: same seed, same updates); buffers (the masks) are not broadcast
        at every forward, so :meth:`check_masks` sees each rank's own masks.
        Call ``model.apply_masks()`` etc. on ``model``, forward through the wrapper.
        """
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    # -- collectives ----------------------------------------------------------------------
    def _all_reduce(self, t: torch.Tensor, op=None) -> torch.Tensor:
        op = self._tdist.ReduceOp.SUM if op is None else op
        dev = t.to(self.device)
        self._tdist.all_reduce(dev, op=op)
        return dev.to(t.device)

    def reduce_stats(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """Sum ``tensors`` over all ranks, in place, in one all-reduce.

        Args:
            tensors: per-batch DPAP sums of one dtype (float64 in :class:`DPAPState`), any
                shapes, the same list of shapes on every rank.

        Returns:
            ``tensors``, each now the sum over ranks (bitwise equal on every rank).
        """
        if not tensors:
            return tensors
        flat = self._all_reduce(torch.cat([t.reshape(-1) for t in tensors]))
        i = 0
        for t in tensors:
            t.copy_(flat[i:i + t.numel()].view_as(t))
            i += t.numel()
        return tensors

    def sum_scalars(self, *values: float) -> Tuple[float, ...]:
        """``values`` summed over all ranks (e.g. an epoch's loss sum and correct count)."""
        return tuple(float(v) for v in self._all_reduce(torch.tensor(values, dtype=torch.float64)))

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank (e.g. a SIGINT that reached some of
        them: every rank then stops at the same batch)."""
        return bool(self._all_reduce(torch.tensor([int(bool(flag))], dtype=torch.int64),
                                     self._tdist.ReduceOp.MAX)[0])

    def check_masks(self, model, state=None) -> None:
        """Raise unless every rank holds the same masks.

        Compares ``model.masks`` (one per weight layer), the model's timestep masks
        (spatio-temporal DPAP, ``(units, T)``; a layer without one counts as an empty mask, so a
        rank that has one where another has none is a size difference) and, with a DPAP ``state``,
        its ``neuron_alive``, ``synapse_alive`` and ``time_alive`` per prunable layer, by an
        all-reduce of the element-wise minimum and maximum (so every rank reaches the same verdict).

        Raises:
            DistributedError: the ranks disagree; names the layer(s), what differs and
                how many elements.
        """
        names = model.layer_names()
        none = torch.zeros(0, dtype=torch.bool)
        parts: List[Tuple[str, torch.Tensor]] = [(f"{names[l]} mask", m) for l, m in enumerate(model.masks)]
        parts += [(f"{names[l]} timestep mask", none if model.time_mask(l) is None else model.time_mask(l))
                  for l in range(len(model.masks))]
        if state is not None:
            for l in state.layers:
                parts.append((f"{names[l]} DPAP neuron_alive", state.neuron_alive[l]))
                parts.append((f"{names[l]} DPAP synapse_alive", state.synapse_alive[l]))
                parts.append((f"{names[l]} DPAP time_alive", state.time_alive.get(l, none)))
        sizes = torch.tensor([p.numel() for _, p in parts], dtype=torch.int64)
        lo_hi = torch.cat([-sizes, sizes])
        lo_hi = self._all_reduce(lo_hi, self._tdist.ReduceOp.MAX)
        k = len(sizes)
        if not torch.equal(-lo_hi[:k], lo_hi[k:]):
            bad = [name for (name, _), a, b in zip(parts, -lo_hi[:k], lo_hi[k:]) if a != b]
            raise DistributedError(f"ranks hold masks of different sizes: {', '.join(bad)}")
        flat = torch.cat([p.reshape(-1).to(torch.int32) for _, p in parts])
        both = self._all_reduce(torch.cat([flat, -flat]), self._tdist.ReduceOp.MAX)
        hi, lo = both[:flat.numel()], -both[flat.numel():]
        differ = hi != lo
        if bool(differ.any()):
            bad, i = [], 0
            for name, p in parts:
                nd = int(differ[i:i + p.numel()].sum())
                if nd:
                    bad.append(f"{name}: {nd} of {p.numel()} elements")
                i += p.numel()
            raise DistributedError(f"DPAP masks diverged across {self.world_size} ranks after pruning: "
                                   f"{'; '.join(bad)}")

    def close(self) -> None:
        """Leave the process group (if this object created it). Every rank must call it:
        it waits for the others (one all-reduce) before tearing the group down."""
        if self._owns_group and self._tdist.is_initialized():
            # Not barrier(): with torch 2.3 and gloo, the group's worker thread can still be
            # destroying the last collective's work when destroy_process_group() joins it; if
            # that frees a tensor whose Python object is gone, the worker needs the GIL, which
            # the joining main thread holds: a deadlock (seen in about 1 run in 4 here). The
            # tensor of this last all-reduce stays referenced, so freeing the work needs no GIL.
            self._last = torch.zeros(1)
            self._tdist.all_reduce(self._last)
            self._tdist.destroy_process_group()
            self._owns_group = False


def setup(backend: Optional[str] = None, device: str = "cpu", env: Optional[Mapping[str, str]] = None):
    """A :class:`DistributedRun` when started by torchrun with ``WORLD_SIZE > 1``, else a :class:`LocalRun`.

    Raises:
        DistributedError: see :class:`DistributedRun` and :func:`under_torchrun`.
    """
    env = os.environ if env is None else env
    if under_torchrun(env) and _env_int(env, "WORLD_SIZE") > 1:
        return DistributedRun(backend, device, env)
    return LocalRun()
