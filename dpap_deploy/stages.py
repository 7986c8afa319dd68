"""The stages of a run, in order (:data:`STAGES`; :mod:`dpap_deploy.pipeline` runs them).

Each stage takes the :class:`~dpap_deploy.pipeline.RunContext`, reads what earlier stages left in
it and adds its part. ``prepare``, ``data`` and ``model`` only check and build: nothing is written
before ``train`` opens the run's staging folder, so bad input leaves no trace. No stage branches
on the kind of model: what differs between families, pruners, data sources and targets lives in
those registered units.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import List, NamedTuple, Optional

import numpy as np

from dpap_deploy.errors import DataError, DpapError, IRError, ModelError

log = logging.getLogger("dpap_deploy")
#: share of a data set held out for testing (sources without a split of their own)
TEST_FRACTION = 0.2
#: test samples whose every population Lava records (``raster.png``, the energy section's Lava synaptic operations)
PROBE_SAMPLES = 32


def preload_lava() -> None:
    """Import Lava's runtime first: it calls ``multiprocessing.set_start_method('fork')`` at
    import time, which fails once anything (tqdm's lock, torch) has fixed the start method."""
    import lava.magma.core.process.process  # noqa: F401


def _positive(name: str, v, minimum: int = 1) -> None:
    if v is not None and v < minimum:
        raise DpapError(f"--{name} must be >= {minimum}, got {v}")


def sizes(name: str, text: Optional[str]) -> Optional[List[int]]:
    """``--hidden`` / ``--channels``: comma-separated positive integers (None stays None).

    Raises:
        DpapError: not integers, or one below 1.
    """
    if text is None:
        return None
    try:
        out = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise DpapError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if not out or any(s < 1 for s in out):
        raise DpapError(f"--{name} sizes must be >= 1, got {text!r}")
    return out


def resolve_device(spec: str) -> str:
    """The torch device of ``--device``: ``cpu``, ``cuda``/``cuda:N`` (refused where CUDA is absent),
    or ``auto`` (CUDA when available, else the CPU).

    Raises:
        DpapError: an unknown device, or CUDA asked for where torch sees none (names why).
    """
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise DpapError(f"--device {spec}: CUDA is not available here ({why}; torch.cuda.is_available() is "
                            "False); use --device cpu or auto")
        if ":" in spec and int(spec[5:]) >= torch.cuda.device_count():
            raise DpapError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return spec
    raise DpapError(f"--device must be cpu, cuda, cuda:N or auto, got {spec!r}")


# -- prepare -------------------------------------------------------------------------------
def prepare(ctx) -> None:
    """Check every option and resolve the units it names (target, profile, family, pruner,
    encoding, device, budget); set up torchrun; read the checkpoint of ``--resume``. Writes nothing."""
    import torch

    from dpap_deploy.data.encoding import ENCODINGS
    from dpap_deploy.export import get_target
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.runfolder import check_output
    from dpap_deploy.train.distributed import local_world_size, setup
    from dpap_deploy.train.families import get_family
    from dpap_deploy.train.pruners import PRUNERS

    preload_lava()
    cfg = ctx.cfg
    if not cfg.target:
        raise DpapError("--target is required (on the command line, or target = \"...\" in --config)")
    for name in ("time_steps", "epochs", "batch_size", "max_test"):
        _positive(name.replace("_", "-"), getattr(cfg, name))
    if not cfg.synops_penalty >= 0.0:
        raise DpapError(f"--synops-penalty must be >= 0, got {cfg.synops_penalty}")
    ctx.exporter = get_target(cfg.target)
    ctx.profile = load_profile(cfg.profile)
    if cfg.chips is not None:
        ctx.profile = ctx.profile.with_chips(cfg.chips)
    ENCODINGS.get(cfg.encoding)
    sizes("hidden", cfg.hidden)
    sizes("channels", cfg.channels)
    ctx.device = resolve_device(cfg.device)
    ctx.family = _family_of(ctx.model_object, cfg.model, get_family)
    _resolve_pruning(cfg, ctx.family.default_pruning)
    if cfg.pruner is not None:
        PRUNERS.get(cfg.pruner)
    _prepare_budget(ctx)
    ctx.progress = not cfg.quiet and sys.stderr.isatty()
    if "OMP_NUM_THREADS" not in os.environ:  # the user's setting wins (two runs sharing 2 cores: 1 each)
        torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // local_world_size())))  # torchrun: shared
    ctx.dist = setup(device=ctx.device)  # under torchrun: this rank of a data-parallel run; else one process
    ctx.progress = ctx.progress and ctx.dist.is_main
    _prepare_file_network(ctx)
    if cfg.resume and not cfg.from_dir:
        _read_resume(ctx)
    else:
        check_output(cfg.out, cfg.force)


def _resolve_pruning(cfg, family_default) -> None:
    """Fill ``--pruner``, ``--target-sparsity`` and ``--regrow`` where the run left them unset
    (None), in place, so ``run.toml`` records what ran (docs/dpap.md sec. 6.12):

    * ``--no-prune``: ``dense``; ``--from``: no pruner (nothing is trained);
    * no ``--pruner``: the family's :class:`~dpap_deploy.train.families.PruningDefaults`, except
      ``dpap`` under a hardware budget (``--fit``, ``--budget-cores``: the budget loop drives DPAP's
      rule) and in runs shorter than :data:`RUN_LENGTH_MIN_EPOCHS` epochs: there a pruner to a target
      sparsity would prune in one or two epochs (its cubic schedule runs from ``e0`` to the recovery
      tail), which an 8-epoch run of a 64-32 MLP on digits does not survive at 0.92 (10 % accuracy),
      while DPAP's fixed schedule prunes almost nothing in so short a run;
    * no ``--target-sparsity``: the family's; no ``--regrow``: the family's when the pruner is the
      family's default one, else 0.

    Raises:
        DpapError: ``--target-sparsity`` outside [0, 1).
    """
    if cfg.no_prune:
        cfg.pruner = "dense"
    if cfg.from_dir:
        return
    if cfg.pruner is None:
        why = ("a hardware budget" if cfg.budget_cores is not None or cfg.fit else
               f"a run under {RUN_LENGTH_MIN_EPOCHS} epochs" if cfg.epochs < RUN_LENGTH_MIN_EPOCHS else None)
        cfg.pruner = "dpap" if why else family_default.pruner
        log.info("pruner %s (%s)", cfg.pruner, f"the default for {why}" if why else
                 f"the model family's default: {family_default.describe()}")
    if cfg.target_sparsity is None:
        cfg.target_sparsity = family_default.target_sparsity
    if cfg.regrow is None:
        cfg.regrow = family_default.regrow if cfg.pruner == family_default.pruner else 0.0
    if not 0.0 <= cfg.target_sparsity < 1.0:
        raise DpapError(f"--target-sparsity must be in [0, 1), got {cfg.target_sparsity}")


def _prepare_file_network(ctx) -> None:
    """``--from FILE``: read the network file now (a bad file fails before anything is written);
    such a run needs ``--data`` and takes no training options that would be ignored."""
    from dpap_deploy.foreign import is_network_file, open_network_file

    cfg = ctx.cfg
    if not is_network_file(cfg.from_dir):
        return
    if not cfg.data and ctx.dataset_object is None:
        raise DpapError(f"--from {cfg.from_dir}: a network file brings no data; give the input with --data")
    if cfg.resume:
        raise DpapError("--resume continues a training run; --from FILE runs a network without training")
    if cfg.encoding == "current":
        raise DpapError(f"--from {cfg.from_dir}: --encoding current drives a network trained for it; a network "
                        "file takes spikes (the default rate encoding, or event data)")
    ctx.file_network = open_network_file(cfg.from_dir)


def _family_of(obj, name: str, get_family):
    if obj is None:
        return get_family(name)
    from dpap_deploy.train.families import ModelFamily

    fam = ModelFamily()
    fam.name = f"{type(obj).__name__} (from Python)"
    return fam


def _prepare_budget(ctx) -> None:
    from dpap_deploy.budget import Budget

    cfg = ctx.cfg
    if cfg.budget_cores is None and not cfg.fit:
        return
    if cfg.pruner != "dpap" or cfg.from_dir:
        raise DpapError("--budget-cores/--fit drive DPAP during training; they cannot be used with --no-prune, "
                        "--pruner other than dpap, or --from")
    profile = ctx.profile.with_cores(cfg.budget_cores) if cfg.budget_cores is not None else ctx.profile
    ctx.budget = Budget(profile, pack=not cfg.no_pack)


def _read_resume(ctx) -> None:
    from dpap_deploy.runfolder import unfinished_run
    from dpap_deploy.train.checkpoint import CHECKPOINT_FILE, load_checkpoint

    folder = unfinished_run(ctx.cfg.out) or ctx.cfg.out
    ctx.resume_ckpt = load_checkpoint(os.path.join(folder, CHECKPOINT_FILE))
    pos = ctx.resume_ckpt["position"]
    log.info("resuming %s at epoch %d batch %d", ctx.cfg.out, pos["epoch"], pos["batch"])


# -- data ----------------------------------------------------------------------------------
def data(ctx) -> None:
    """Load the data set (``--data``, the family's default, or what ``--from``'s run used), check
    that the family takes it and that ``--time-steps`` agrees with event data's own ``T``."""
    from dpap_deploy.data import DataRequest, load_data

    from dpap_deploy.foreign import file_time_steps

    cfg = ctx.cfg
    saved = {}
    if ctx.file_network is not None:
        T = file_time_steps(ctx.file_network, cfg.time_steps)
    elif cfg.from_dir:
        from dpap_deploy.rundir import read_run_config

        saved = ctx.from_run = read_run_config(cfg.from_dir)
    seed = saved.get("seed", cfg.seed)
    if ctx.file_network is None:
        T = cfg.time_steps if not cfg.from_dir else saved.get("time_steps")
    request = DataRequest(T, seed, saved.get("test_fraction", TEST_FRACTION))
    spec = cfg.data or saved.get("data") or ctx.family.default_data
    if ctx.dataset_object is not None:
        ds, ctx.data_spec = _dataset_from_python(ctx.dataset_object, request), None
    else:
        ds, ctx.data_spec = load_data(spec, request), spec
    if ds.kind != "static" and T is not None and T != ds.time_steps:
        raise DataError(f"--time-steps {T}, but data {ds.name!r} has T = {ds.time_steps} steps per sample; event data "
                        "bring their own T (drop --time-steps)")
    if ctx.file_network is None:  # a file's network is checked against the data in ``model``
        ctx.family.check_data(ds)
    for note in ds.notes:
        print(f"note      {note}", file=sys.stderr)
    ctx.dataset = ds
    ctx.y_test = ds.y_test[: cfg.max_test] if cfg.max_test else ds.y_test


def _dataset_from_python(obj, request):
    """A :class:`Dataset` handed in, or ``(x, y)`` arrays checked and split like an ``.npz`` file."""
    from dpap_deploy.data import Dataset

    if isinstance(obj, Dataset):
        return obj
    import tempfile

    from dpap_deploy.data.npz import load_npz

    try:
        x, y = obj
    except (TypeError, ValueError):
        raise DataError(f"data must be a source name, a Dataset or (x, y) arrays, got {type(obj).__name__}") from None
    with tempfile.TemporaryDirectory() as d:  # one set of checks for files and arrays
        path = os.path.join(d, "data.npz")
        np.savez(path, x=np.asarray(x), y=np.asarray(y))
        ds = load_npz(path, request.test_fraction, request.seed)
    from dataclasses import replace

    return replace(ds, name="arrays")


# -- model ---------------------------------------------------------------------------------
def model(ctx) -> None:
    """Build the network (the family's, a user's file or object, the checkpoint's under
    ``--resume``, or load ``--from``'s), check it against the target and the budget, choose the
    DPAP constants and encode the test split."""
    from dpap_deploy.train.loop import TrainConfig, encoder_for, test_inputs

    cfg, ds = ctx.cfg, ctx.dataset
    if ctx.file_network is not None:
        ctx.model = ctx.file_network
    elif cfg.from_dir:
        _load_from_run(ctx)
    else:
        ctx.model = _build_model(ctx)
    spiking = ctx.model.spiking
    if ctx.exporter.takes == "ann" and spiking:
        raise DpapError(f"target {cfg.target} exports ANNs; train one with --model ann-mlp")
    if ctx.exporter.takes == "snn" and not spiking:
        raise DpapError(f"target {cfg.target} needs a spiking network; an ANN goes to target onnx")
    if cfg.encoding == "current" and (ds.kind != "static" or not spiking):
        raise DpapError(f"--encoding current drives a spiking network with static features; data {ds.name!r} is "
                        f"{ds.kind}{'' if spiking else ' and the network is an ANN'}")
    if cfg.synops_penalty and not spiking:
        raise DpapError(f"--synops-penalty {cfg.synops_penalty}: the synaptic-operation penalty counts spikes; "
                        "the network is an ANN")
    ctx.dpap_cfg = _dpap_config(ctx, spiking) if ctx.file_network is None else None
    if ctx.budget is not None:
        if any(s.kind != "fc" for s in ctx.model.specs()) or not spiking:
            raise DpapError("--budget-cores/--fit drive spiking networks of fully connected layers")
        ctx.budget.check_feasible(list(ctx.model.sizes), len(ctx.model.layers) - 1)  # before anything is written
    T = (ctx.from_run or {}).get("time_steps") or ds_T(ctx) or 32
    enc = (ctx.from_run or {}).get("encoding", cfg.encoding)
    ctx.encoder = encoder_for(ds, ctx.model, TrainConfig(time_steps=T, encoding=enc))
    x = test_inputs(ds, ctx.encoder, (ctx.from_run or {}).get("seed", cfg.seed))
    if cfg.max_test:
        x = x[:, : cfg.max_test] if spiking else x[: cfg.max_test]
    ctx.x_test = x
    if ctx.file_network is not None:
        ctx.ir = ctx.file_network.for_data(ds.n_features, ds.n_classes, ctx.encoder.time_steps)


def ds_T(ctx) -> Optional[int]:
    """``T`` asked for static data: ``--time-steps``, or for ``--from FILE`` the file's own window."""
    from dpap_deploy.foreign import file_time_steps

    if ctx.file_network is not None:
        return file_time_steps(ctx.file_network, ctx.cfg.time_steps)
    return ctx.cfg.time_steps


def _build_model(ctx):
    from dpap_deploy.train.families import BuildOptions
    from dpap_deploy.train.models import model_from_config

    cfg, ds = ctx.cfg, ctx.dataset
    if ctx.resume_ckpt is not None:  # train() loads the weights; the structure tells spiking and encoding
        return model_from_config(ctx.resume_ckpt["model_config"])
    if ctx.model_object is not None:
        return _model_from_python(ctx.model_object, ds, cfg)
    opts = BuildOptions(sizes("hidden", cfg.hidden), sizes("channels", cfg.channels), cfg.encoding, cfg.seed)
    return ctx.family.build(ds, opts)


def _model_from_python(obj, ds, cfg):
    import torch

    from dpap_deploy.train.models import SequentialNet
    from dpap_deploy.train.user_model import from_torch

    if isinstance(obj, SequentialNet):
        return obj
    torch.manual_seed(cfg.seed)
    return from_torch(obj, ds.sample_shape, family=f"{type(obj).__name__} (from Python)",
                      input_current=ds.kind == "static" and cfg.encoding == "current")


def _load_from_run(ctx) -> None:
    from dpap_deploy.ir import NetworkIR
    from dpap_deploy.rundir import MODEL_FILE, load_model

    cfg, ds = ctx.cfg, ctx.dataset
    ctx.ir = NetworkIR.load(os.path.join(cfg.from_dir, "ir.npz"))
    ctx.model, _ = load_model(os.path.join(cfg.from_dir, MODEL_FILE))
    if ctx.ir.input_size != ds.n_features or ctx.ir.n_classes < ds.n_classes:
        raise DataError(f"data {ds.name!r} has {ds.n_features} features and {ds.n_classes} classes; the network in "
                        f"{cfg.from_dir!r} takes {ctx.ir.input_size} inputs and has {ctx.ir.n_classes} outputs")


#: the default DPAP schedule is run-length from this many epochs on, fixed below: compressed into a
#: handful of epochs, the run-length schedule removes units after the first epoch, on the scores of
#: a network that has barely started to learn (an 8-epoch run of a 64-32 MLP on digits, T = 16, seed
#: 3: 47.5 % on the first 40 test samples against 82.5 % with the fixed schedule, which prunes almost
#: nothing in so short a run)
RUN_LENGTH_MIN_EPOCHS = 20


def _dpap_config(ctx, spiking: bool):
    """The run's :class:`~dpap_deploy.train.dpap.DPAPConfig`: the preset (``--dpap-preset``, else the
    family's), with ``--timestep-pruning``, ``--dpap-normalise``, ``--dpap-percentiles``,
    ``--dpap-synapse-score`` and ``--dpap-schedule`` applied (docs/dpap.md secs. 5.1, 6.7, 11.5);
    the schedule by default is ``run-length`` for runs of :data:`RUN_LENGTH_MIN_EPOCHS` epochs or
    more and the preset's as written (``fixed``) for shorter ones. Raises :class:`DpapError` naming the option at fault."""
    from dataclasses import replace

    from dpap_deploy.train.dpap import PRESET_EPOCHS, PRESETS, for_run_length

    cfg = ctx.cfg
    preset = cfg.dpap_preset or (ctx.family.default_preset if spiking else "mnist-ann")
    if preset not in PRESETS:
        raise DpapError(f"unknown --dpap-preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    dpap = PRESETS[preset]
    _check_timestep_options(cfg, spiking)
    if cfg.timestep_pruning:
        dpap = replace(dpap, timestep=_timestep_rule(cfg))
    for option, name in (("dpap_normalise", "normalise"), ("dpap_synapse_score", "synapse_score")):
        if getattr(cfg, option):
            try:
                dpap = replace(dpap, **{name: getattr(cfg, option)})
            except ValueError as exc:
                raise DpapError(f"--{option.replace('_', '-')}: {exc}") from None
    if cfg.synops_cost_power is not None:
        if cfg.pruner != "dpap-synops":
            raise DpapError(f"--synops-cost-power {cfg.synops_cost_power}: it sets the synapse ranking of "
                            f"--pruner dpap-synops; this run's pruner is {cfg.pruner!r}")
        try:
            dpap = replace(dpap, synops_cost_power=cfg.synops_cost_power)
        except ValueError as exc:
            raise DpapError(f"--synops-cost-power: {exc}") from None
    if cfg.regrow:
        dpap = replace(dpap, regrow=_checked_regrow(cfg))
    if cfg.dpap_percentiles:
        try:
            lo, hi = (float(v) for v in cfg.dpap_percentiles.split(","))
            dpap = replace(dpap, percentiles=(lo, hi))
        except ValueError as exc:
            raise DpapError(f"--dpap-percentiles takes LO,HI with 0 <= LO < HI <= 100, got "
                            f"{cfg.dpap_percentiles!r} ({exc})") from None
    schedule = cfg.dpap_schedule
    if schedule is None:  # the default: run-length for runs long enough to learn before pruning
        schedule = "run-length" if cfg.epochs >= RUN_LENGTH_MIN_EPOCHS else "fixed"
        log.info("DPAP schedule %s (default: run-length from %d epochs on)", schedule, RUN_LENGTH_MIN_EPOCHS)
    if schedule == "run-length":
        try:
            dpap = for_run_length(dpap, cfg.epochs, PRESET_EPOCHS[preset])
        except ValueError as exc:
            raise DpapError(f"--dpap-schedule run-length: {exc}") from None
    elif schedule != "fixed":
        raise DpapError(f"--dpap-schedule must be fixed or run-length, got {cfg.dpap_schedule!r}")
    if cfg.timestep_target is not None:
        if dpap.stop_epoch is None:
            raise DpapError(f"--timestep-target {cfg.timestep_target}: its schedule ends where the recovery tail "
                            f"starts, which only the run-length schedule has; this run's is {schedule!r} "
                            f"(add --dpap-schedule run-length)")
        dpap = replace(dpap, timestep_target=cfg.timestep_target)
    return dpap


def _check_timestep_options(cfg, spiking: bool) -> None:
    """``--timestep-target`` in (0, 1) and not with ``--timestep-pruning``; either option needs a
    spiking network and a pruner that gathers eq. 8's importance (a DPAP pruner: ``magnitude`` and
    ``dense`` would ignore it)."""
    option = ("--timestep-target" if cfg.timestep_target is not None else
              "--timestep-pruning" if cfg.timestep_pruning else None)
    if option is None:
        return
    t = cfg.timestep_target
    if t is not None and not 0.0 < t < 1.0:
        raise DpapError(f"--timestep-target must be in (0, 1) (the fraction of (neuron, step) pairs silenced), got {t}")
    if t is not None and cfg.timestep_pruning:
        raise DpapError(f"--timestep-target {t} and --timestep-pruning {cfg.timestep_pruning} both choose how time "
                        "steps are pruned; give one")
    if not spiking:
        raise DpapError(f"{option} prunes time steps of spiking networks; an ANN has none")
    from dpap_deploy.train.pruners import PRUNERS, DPAPPruner

    if not issubclass(PRUNERS.get(cfg.pruner), DPAPPruner):
        dpap = [n for n in PRUNERS.names() if issubclass(PRUNERS.get(n), DPAPPruner)]
        raise DpapError(f"{option} needs a pruner that gathers paper eq. 8's timestep importance "
                        f"({', '.join(dpap)}); this run's pruner is {cfg.pruner!r}")


def _checked_regrow(cfg) -> float:
    """``--regrow FRACTION``: in [0, 1), with a pruner that ranks synapses globally (``regrows``)."""
    from dpap_deploy.train.pruners import PRUNERS

    if not 0.0 <= cfg.regrow < 1.0:
        raise DpapError(f"--regrow must be in [0, 1) (the fraction of live synapses exchanged per pruning epoch at "
                        f"the start), got {cfg.regrow}")
    if not PRUNERS.get(cfg.pruner).regrows:
        able = [n for n in PRUNERS.names() if PRUNERS.get(n).regrows]
        raise DpapError(f"--regrow {cfg.regrow}: regrowth exchanges synapses under a global ranking, which "
                        f"{', '.join(able)} have; this run's pruner is {cfg.pruner!r}")
    return float(cfg.regrow)


def _timestep_rule(cfg):
    """``--timestep-pruning EPSILON,ETA`` as the timestep rule's constants."""
    from dpap_deploy.train.dpap import RuleConstants

    try:
        eps, eta = (float(v) for v in cfg.timestep_pruning.split(","))
    except ValueError:
        raise DpapError(f"--timestep-pruning takes EPSILON,ETA (two numbers), got {cfg.timestep_pruning!r}") from None
    if not (0.0 < eps < 2.0) or eta <= 0:
        raise DpapError(f"--timestep-pruning EPSILON must be in (0, 2) (at 2 nothing is protected) and ETA > 0, "
                        f"got {cfg.timestep_pruning!r}")
    # EPSILON, ETA (paper names) are the timestep rule's c and rho; b = 2, the fully connected protection
    return RuleConstants(eps, 2.0, eta)


# -- train ---------------------------------------------------------------------------------
def train(ctx) -> None:
    """Open the run's staging folder (the first write), save ``run.toml``, train with the pruner
    (unless ``--from``), then save the model, ``config.json`` and ``train_log.jsonl``."""
    from dpap_deploy.runfolder import RunFolder

    cfg = ctx.cfg
    ctx.folder = RunFolder(cfg.out, writer=ctx.dist.is_main)
    ctx.folder.open(resume=ctx.resume_ckpt is not None)
    if ctx.dist.is_main and ctx.resume_ckpt is None:
        from dpap_deploy.config import write_config

        write_config(ctx.folder.path("run.toml"), run_toml(cfg))
    if cfg.from_dir:
        ctx.dist.close()
        ctx.done = not ctx.dist.is_main
        return
    from dpap_deploy.errors import TrainingInterrupted

    try:
        _train(ctx)
    except TrainingInterrupted:  # under torchrun every rank stopped at the same batch: leave the group together
        ctx.dist.close()
        raise
    ctx.dist.close()  # every rank leaves the group; rank 0 goes on to export, simulate and report
    if not ctx.dist.is_main:
        ctx.done = True
        return
    _save_trained(ctx)


def run_toml(cfg) -> dict:
    """The options that shape a run, as ``run.toml`` keys (the long option names; None left out:
    TOML has no null). ``dpap-export --config run.toml`` repeats the run; ``--resume`` continues it."""
    from dataclasses import fields

    from dpap_deploy.config import NOT_SAVED

    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in NOT_SAVED or f.name == "check_only" or value is None:
            continue
        out["from" if f.name == "from_dir" else f.name.replace("_", "-")] = value
    return out


def train_config(ctx):
    """The :class:`~dpap_deploy.train.loop.TrainConfig` of this run."""
    from dpap_deploy.train.loop import TrainConfig

    cfg = ctx.cfg
    return TrainConfig(hidden=sizes("hidden", cfg.hidden) or (), epochs=cfg.epochs, batch_size=cfg.batch_size,
                       lr=cfg.lr, time_steps=ctx.encoder.time_steps, seed=cfg.seed, prune=cfg.pruner != "dense",
                       encoding=cfg.encoding, device=ctx.device, synops_penalty=cfg.synops_penalty)


def _train(ctx) -> None:
    from dpap_deploy.train.checkpoint import CHECKPOINT_FILE
    from dpap_deploy.train.loop import train as train_loop

    cfg, main = ctx.cfg, ctx.dist.is_main
    log_file = open(ctx.folder.path("train_log.jsonl"), "w") if main else None
    try:
        for rec in (ctx.resume_ckpt or {}).get("history", []) if main else []:
            log_file.write(json.dumps(rec) + "\n")

        def on_epoch(rec):
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            log.debug("epoch %d: %s", rec["epoch"], json.dumps({k: v for k, v in rec.items() if k != "layers"}))

        log.info("training %s (%s) for %d epochs", ctx.family.name, cfg.pruner, cfg.epochs)
        res = train_loop(ctx.dataset, train_config(ctx), ctx.dpap_cfg, progress=ctx.progress, on_epoch=on_epoch,
                         model=ctx.model if ctx.resume_ckpt is None else None, method=cfg.pruner,
                         target_sparsity=cfg.target_sparsity, budget=ctx.budget,
                         checkpoint=ctx.folder.path(CHECKPOINT_FILE), resume=ctx.resume_ckpt, dist=ctx.dist,
                         encoder=ctx.encoder)
    finally:
        if log_file is not None:
            log_file.close()
    ctx.train_result, ctx.model, ctx.history = res, res.model, res.history
    ctx.timing["train_loop"] = res.seconds


def _save_trained(ctx) -> None:
    from dpap_deploy.fileio import write_json
    from dpap_deploy.rundir import MODEL_FILE, save_model

    cfg, res = ctx.cfg, ctx.train_result
    tcfg = train_config(ctx).to_dict()
    save_model(ctx.folder.path(MODEL_FILE), ctx.model, train_config=tcfg,
               dpap_state=res.state.state_dict() if res.state is not None else None)
    write_json(ctx.folder.path("config.json"), {  # what --from needs to rebuild the data and its encoding
        "seed": cfg.seed, "time_steps": ctx.encoder.time_steps, "data": ctx.data_spec, "test_fraction": TEST_FRACTION,
        "model": cfg.model, "encoding": cfg.encoding, "train": tcfg, "target": cfg.target, "profile": cfg.profile})


# -- ir ------------------------------------------------------------------------------------
def ir(ctx) -> None:
    """The network's IR (``ir.npz``); the test window shortened when timestep pruning cut steps."""
    from dpap_deploy.train.compact import to_ir

    if ctx.ir is None:
        meta = {"trained_with": ctx.cfg.pruner, "seed": ctx.cfg.seed, "family": ctx.family.name}
        name = f"{ctx.dataset.name}-{'snn' if ctx.model.spiking else 'ann'}"
        ctx.ir = to_ir(ctx.model, ctx.encoder.time_steps, name=name, metadata=meta)
    ctx.ir.save(ctx.folder.path("ir.npz"))
    if ctx.model.spiking and ctx.ir.time_steps < ctx.x_test.shape[0]:  # timestep pruning removed the last steps
        log.info("timestep pruning shortened the window from %d to %d time steps", ctx.x_test.shape[0],
                 ctx.ir.time_steps)
        ctx.x_test = ctx.x_test[: ctx.ir.time_steps]


# -- export --------------------------------------------------------------------------------
def export(ctx) -> None:
    """Run the target: write its files and (most targets) run them on the test split."""
    t0 = time.perf_counter()
    probe = PROBE_SAMPLES if ctx.model.spiking else 0  # loihi-sim records the hidden populations in the same run
    ctx.result = ctx.exporter(ctx.ir, ctx.folder.staging, spikes=ctx.x_test, progress=ctx.progress,
                              probe_samples=probe)
    ctx.timing["lava_sim"] = ctx.result.seconds.get("run", 0.0)
    ctx.timing["export_build"] = time.perf_counter() - t0 - ctx.timing["lava_sim"]
    if ctx.result.extra.get("message"):
        print(f"note      {ctx.result.extra['message']}", file=sys.stderr)
    ctx.exported = ctx.result.network if ctx.result.network is not None else ctx.ir


# -- verify --------------------------------------------------------------------------------
def verify(ctx) -> None:
    """Accuracy of the trained network (Norse or torch; with ``--from FILE`` the file's own tool,
    :mod:`dpap_deploy.foreign`), of the target's run and of the fixed-point emulator on the same
    input, and their agreement (predictions; output spikes, every step). Norse's run also keeps
    every population's spikes (``ctx.norse_pops``) for ``measure``."""
    from dpap_deploy.train.loop import classify

    y = ctx.y_test
    t0 = time.perf_counter()
    framework, scores, ref_spikes = _reference_scores(ctx)
    ctx.timing[framework if framework in ("norse", "torch") else "reference"] = time.perf_counter() - t0
    pred = classify(scores) if scores is not None else None
    if pred is not None:
        ctx.accuracy[framework] = float((pred == y).mean())
    sim_key = ctx.result.extra.get("accuracy_key", "lava")
    pred_sim = classify(ctx.result.counts) if ctx.result.counts is not None else None
    if pred_sim is not None:
        ctx.accuracy[sim_key] = float((pred_sim == y).mean())
    both = pred is not None and pred_sim is not None
    ctx.agreement.update(predictions=float((pred == pred_sim).mean()) if both else None,
                         compared=f"{framework} vs {sim_key}")
    if ref_spikes is not None and ctx.result.output_spikes is not None:  # a file's tool, spike for spike
        ctx.agreement["reference_spikes"] = float((ref_spikes == ctx.result.output_spikes).mean())
    if ctx.exported.quantized and pred_sim is not None and _emulator_models(ctx):  # what training uses per epoch
        from dpap_deploy.export.emulator import emulate

        t0 = time.perf_counter()
        counts, rasters = emulate(ctx.exported, ctx.x_test, record=ctx.result.output_spikes is not None,
                                  progress=ctx.progress)
        ctx.timing["emulator"] = time.perf_counter() - t0
        pred_emu = classify(counts)
        ctx.accuracy["emulator"] = float((pred_emu == y).mean())
        ctx.agreement["emulator_predictions"] = float((pred_emu == pred_sim).mean())
        if ctx.result.output_spikes is not None:
            ctx.agreement["spikes"] = float((rasters[-1] == ctx.result.output_spikes).mean())


def _emulator_models(ctx) -> bool:
    """Whether the emulator models ``ctx.exported``; if not (e.g. sigma-delta layers, which it refuses by
    name), record why as ``agreement["emulator_skipped"]`` (the report prints it) and skip it."""
    from dpap_deploy.errors import UnsupportedLayerError
    from dpap_deploy.export.emulator import check_supported

    try:
        check_supported(ctx.exported)
    except UnsupportedLayerError as exc:
        ctx.agreement["emulator_skipped"] = str(exc)
        return False
    return True


def _reference_scores(ctx):
    """``(name, scores (N, C), output spikes (T, N, C) or None)`` of the run the target is compared
    with: the trained model in Norse (keeping every population's spikes in ``ctx.norse_pops``) or
    torch, or the file's own tool (``scores`` None when the file type has none; spikes only where
    the tool's run is aligned with ours, lava-dl netx)."""
    from dpap_deploy.train.loop import predict, scores_and_spikes

    if ctx.file_network is not None:
        ref = ctx.file_network.reference
        return (ref.key if ref else "emulator"), *ctx.file_network.run_reference(ctx.x_test)
    if ctx.model.spiking:
        scores, ctx.norse_pops = scores_and_spikes(ctx.model, ctx.x_test)
        return "norse", scores, None
    return "torch", predict(ctx.model, ctx.x_test), None


# -- map -----------------------------------------------------------------------------------
def map_(ctx) -> None:
    """Place the exported network on the profile's neuro cores (``dpap_deploy/mapping.py``)."""
    from dpap_deploy.mapping import map_network

    t0 = time.perf_counter()
    ctx.mapping = map_network(ctx.exported, ctx.profile, pack=not ctx.cfg.no_pack)
    ctx.timing["mapping"] = time.perf_counter() - t0


# -- measure -------------------------------------------------------------------------------
class LavaProbe(NamedTuple):
    """Every population in Lava for the first test samples (:func:`lava_probe`)."""

    x: np.ndarray               # input (T, n, ...)
    hidden: list                # per hidden layer (T, n, n_l)
    output: np.ndarray          # output spikes (T, n, C)
    counts: np.ndarray          # output spike counts (n, C)
    ir: object                  # the quantised network that ran


def lava_probe(ir, x_test, samples: int = PROBE_SAMPLES) -> LavaProbe:
    """The first ``samples`` test samples through Lava's fixed-point simulator with a sink on
    every population: the fallback of :func:`measure` when the export's run did not record them
    (targets other than ``loihi-sim``)."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.quantize import quantize

    q = ir if ir.quantized else quantize(ir)
    x = x_test[:, :samples]
    counts, info = lava_sim.run(q, x, record_hidden=True)
    return LavaProbe(x, info["hidden_spikes"], info["output_spikes"], counts, q)


def recorded_probe(ctx) -> Optional[LavaProbe]:
    """The :class:`LavaProbe` of the first test samples from the export's own Lava run (the target
    recorded the hidden populations, ``ExportResult.hidden_spikes``), or None when it did not."""
    res = ctx.result
    if res is None or res.hidden_spikes is None or res.output_spikes is None or res.counts is None:
        return None
    n = res.hidden_spikes[0].shape[1] if res.hidden_spikes else min(PROBE_SAMPLES, res.output_spikes.shape[1])
    return LavaProbe(ctx.x_test[:, :n], list(res.hidden_spikes), res.output_spikes[:, :n], res.counts[:n],
                     ctx.exported)


def measure(ctx) -> None:
    """Spiking networks: every population in Lava for the first :data:`PROBE_SAMPLES` samples
    (``raster.png``, Lava's synaptic operations; recorded by the export's run, else a second Lava
    run, :func:`lava_probe`) and the energy section (paper eqs. 14-15, synaptic operations from
    Norse's spikes on the whole split, kept by ``verify``). Times ``probe`` and ``energy``."""
    from dpap_deploy.energy import energy_section
    from dpap_deploy.report import model_section

    if not ctx.model.spiking:
        return
    t0 = time.perf_counter()
    ctx.probe = recorded_probe(ctx) or lava_probe(ctx.exported, ctx.x_test)
    t1 = time.perf_counter()
    ctx.timing["probe"] = t1 - t0
    sparsity = model_section(ctx.exported, ctx.result.synapses_per_layer, "")["sparsity"]
    n, pops = ctx.probe.x.shape[1], ctx.norse_pops  # None with --from FILE: Lava's spikes only
    ctx.energy = energy_section(ctx.exported, sparsity, norse=[ctx.x_test] + pops[:-1] if pops else None,
                                lava=[ctx.probe.x] + list(ctx.probe.hidden),
                                norse_probe=[ctx.probe.x] + [p[:, :n] for p in pops[:-1]] if pops else None)
    ctx.timing["energy"] = time.perf_counter() - t1


# -- report --------------------------------------------------------------------------------
def report(ctx) -> None:
    """Plots, ``report.json`` and ``report.md``; the summary on stdout; the exit code (3 when the
    network does not fit and ``--require-fit`` or a budget was given)."""
    from dpap_deploy.fileio import atomic_path, write_json
    from dpap_deploy.report import markdown_report, summary_text, validate

    log.info("writing plots and the report")
    t0 = time.perf_counter()
    ctx.plots = _plots(ctx)
    ctx.timing["plots"] = time.perf_counter() - t0
    rep = ctx.report = _report_dict(ctx, t0)
    validate(rep)
    write_json(ctx.folder.path("report.json"), rep)
    with atomic_path(ctx.folder.path("report.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(markdown_report(rep, [os.path.basename(p) for p in ctx.plots if p]))
    print(summary_text(rep))
    print(f"report    {os.path.join(ctx.cfg.out, 'report.json')}, {os.path.join(ctx.cfg.out, 'report.md')}")
    if (ctx.cfg.require_fit or ctx.budget is not None) and not ctx.mapping.fits:
        ctx.exit_code = 3


def _plots(ctx) -> List[str]:
    from dpap_deploy.plots import plot_pruning, plot_raster
    from dpap_deploy.resources import plot_resources

    trained = ctx.cfg.pruner != "dense" and not ctx.cfg.from_dir
    plots = [plot_resources(ctx.mapping.to_report(), ctx.folder.path("resources.png")),
             plot_pruning(ctx.history, ctx.folder.path("pruning.png"),
                          title=f"{'DPAP' if trained else 'dense training'} on {ctx.dataset.name}")]
    if ctx.probe is not None:  # input, hidden and output spikes of test sample 0 as Lava produced them
        p = ctx.probe
        pops = [] if ctx.encoder.analog else [("input", p.x[:, 0].reshape(p.x.shape[0], -1))]  # analog: no spikes
        pops += [(l.name, h[:, 0]) for l, h in zip(p.ir.layers[:-1], p.hidden)]
        pops.append((p.ir.layers[-1].name + " (output)", p.output[:, 0]))
        title = (f"test sample 0 (label {int(ctx.y_test[0])}, predicted {int(p.counts[0].argmax())}) in Lava "
                 f"Loihi2SimCfg fixed point, T = {p.x.shape[0]}")
        plots.append(plot_raster(pops, ctx.folder.path("raster.png"), title))
    return [p for p in plots if p]


def _report_dict(ctx, report_started: float) -> dict:
    from dpap_deploy.report import model_section

    cfg, ds, res = ctx.cfg, ctx.dataset, ctx.result
    tcfg = train_config(ctx).to_dict() if not cfg.from_dir else None
    family = ctx.file_network.family if ctx.file_network is not None else ctx.family.name
    files = [dict(f, path=ctx.folder.final(f["path"])) for f in res.files]
    files += [{"path": os.path.join(cfg.out, f), "verified_by": None}
              for f in ("ir.npz", _model_file(), "run.toml", "config.json", "train_log.jsonl")
              + tuple(os.path.basename(p) for p in ctx.plots) if os.path.isfile(ctx.folder.path(f))]
    return {
        "target": cfg.target, "profile": ctx.profile.name,
        "dataset": {"name": ds.name, "kind": ds.kind, "n_train": int(len(ds.y_train)), "n_test": int(len(ctx.y_test)),
                    "time_steps": int(ctx.encoder.time_steps) if ctx.model.spiking else 1,
                    "encoding": ctx.encoder.encoding, "n_features": ds.n_features, "sample_shape": list(ds.sample_shape),
                    "n_classes": ds.n_classes, "seed": (ctx.from_run or {}).get("seed", cfg.seed),
                    "notes": list(ds.notes)},
        "model": model_section(ctx.exported, res.synapses_per_layer,
                               res.extra.get("synapses_counted_from", f"the {cfg.target} export")),
        "energy": ctx.energy, "accuracy": ctx.accuracy, "agreement": ctx.agreement,
        "resources": ctx.mapping.to_report(),
        "budget": ctx.budget.to_report() if ctx.budget is not None else None,
        "timing_s": _timing(ctx, report_started),
        "fixed_point": res.extra.get("fixed_point"),
        "target_notes": [res.extra["message"]] if res.extra.get("message") else [],
        "training": {"config": tcfg, "pruner": cfg.pruner if ctx.file_network is None else None, **_pruning_options(cfg),
                     "epochs": len(ctx.history), "from": cfg.from_dir, "device": ctx.device, "family": family},
        "files": files,
    }


def _pruning_options(cfg) -> dict:
    """``target_sparsity`` and ``regrow`` of the report's training section: the values the run's
    pruner used (the family's defaults or the options), None where the pruner takes no such value."""
    from dpap_deploy.train.pruners import PRUNERS

    cls = PRUNERS.get(cfg.pruner) if cfg.pruner and not cfg.from_dir else None
    return {"target_sparsity": cfg.target_sparsity if cls is not None and cls.takes_target else None,
            "regrow": cfg.regrow if cls is not None and cls.regrows else None}


def _model_file() -> str:
    from dpap_deploy.rundir import MODEL_FILE

    return MODEL_FILE


def _timing(ctx, report_started: float) -> dict:
    """``timing_s`` of the report, seconds (:data:`dpap_deploy.report.TIMING_STAGES` and ``TIMING_PARTS``):
    ``startup`` (from the CLI's start, or :func:`~dpap_deploy.pipeline.run_pipeline`'s, to the first
    stage), every stage of :data:`STAGES` (``report`` up to now: plots and this dict), the parts measured
    inside them (``train_loop``, ``export_build``, ``lava_sim``, ``norse``/``torch``, ``emulator``,
    ``mapping``, ``probe``, ``energy``, ``plots``) and ``total``: the whole run up to now, so at least
    the sum of the stages (only writing the report files comes after)."""
    t = dict(ctx.timing)
    t["train"] = t.get("train", 0.0)
    now = time.perf_counter()
    t["report"] = now - report_started
    started = ctx.started if ctx.started is not None else now
    t["total"] = now - started
    return {k: round(v, 3) for k, v in t.items()}


#: the stages in order, as ``(name, function)``
STAGES = (("prepare", prepare), ("data", data), ("model", model), ("train", train), ("ir", ir), ("export", export),
          ("verify", verify), ("map", map_), ("measure", measure), ("report", report))
