"""A run as a pipeline of stages over one context: what ``dpap-export``, the benchmarks, the tests
and the Python API all call.

::

    prepare -> data -> model -> train -> ir -> export -> verify -> map -> measure -> report

Each stage is a function ``stage(ctx)`` in :mod:`dpap_deploy.stages` that reads what the earlier
stages put into the :class:`RunContext` and adds its own part;
:data:`dpap_deploy.stages.STAGES` lists them in order. The units a stage picks are registered by name: data sources (``dpap_deploy.data.SOURCES``), model
families (``dpap_deploy.train.families.FAMILIES``), pruners (``dpap_deploy.train.pruners.PRUNERS``),
export targets (``dpap_deploy.export.TARGETS``) and network-file readers
(``dpap_deploy.readers.READERS``). Every input is checked before anything is written; the run
writes into a staging folder that moves into place when the last stage is done
(:mod:`dpap_deploy.runfolder`).

From Python::

    import dpap_deploy
    report = dpap_deploy.deploy(model="snn-mlp", data="wine", target="loihi-sim", out="runs/wine", epochs=10)
    report = dpap_deploy.deploy(model=my_sequential_state, data=(x, y), target="loihi-sim", out="runs/mine")
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from dpap_deploy.errors import ConfigError


@dataclass
class RunConfig:
    """Every option of a run (the long options of ``dpap-export``, with ``-`` as ``_``).

    Attributes:
        target: export target name (``loihi-sim``, ``loihi2``, ``netx``, ``nir``, ``onnx``).
        out: output folder.
        data: data source (``digits``, ``wine``, ``event-digits``, ``PATH.npz``, ``nmnist:ROOT`` ...),
            None for the model family's default.
        model: model family or ``PATH.py:FUNCTION``.
        encoding: ``rate`` or ``current`` (static data into a spiking network).
        time_steps: ``T`` (None: the data's own, or 32 for encoded static data).
        pruner: a registered pruner (``dpap``, ``dpap-magnitude``, ``dpap-synops``, ``magnitude``,
            ``dense``; ``no_prune`` means ``dense``); None: the model family's default
            (``ModelFamily.default_pruning``), ``dpap`` under a hardware budget or below 20 epochs.
        target_sparsity: None: the family's default (0.92 for ``snn-mlp``, else 0.8).
        regrow: None: the family's default with its default pruner (0.3 for ``snn-mlp``), else 0.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (training and the torch emulator engine).
        from_dir: export the network of an earlier run (its folder) or of a network file
            (``.net``, ``.nir``, ``.npz``: :mod:`dpap_deploy.foreign`) instead of training.
        resume: continue the interrupted run in this folder.
        The rest as ``dpap-export --help`` describes them.
    """

    target: Optional[str] = None
    out: str = "runs/latest"
    force: bool = False
    resume: Optional[str] = None
    from_dir: Optional[str] = None
    check_only: bool = False
    data: Optional[str] = None
    model: str = "snn-mlp"
    encoding: str = "rate"
    hidden: Optional[str] = None
    channels: Optional[str] = None
    epochs: int = 40
    seed: int = 0
    time_steps: Optional[int] = None
    batch_size: int = 32
    lr: float = 5e-3
    pruner: Optional[str] = None
    no_prune: bool = False
    target_sparsity: Optional[float] = None
    dpap_preset: Optional[str] = None
    timestep_pruning: Optional[str] = None
    timestep_target: Optional[float] = None
    dpap_schedule: Optional[str] = None
    dpap_normalise: Optional[str] = None
    dpap_percentiles: Optional[str] = None
    dpap_synapse_score: Optional[str] = None
    synops_penalty: float = 0.0
    synops_cost_power: Optional[float] = None
    regrow: Optional[float] = None
    device: str = "cpu"
    profile: str = "loihi2"
    chips: Optional[int] = None
    no_pack: bool = False
    budget_cores: Optional[int] = None
    fit: bool = False
    max_test: Optional[int] = None
    require_fit: bool = False
    quiet: bool = False
    log_level: str = "warning"
    debug: bool = False

    @classmethod
    def from_namespace(cls, ns, extra: Tuple[str, ...] = ("config",)) -> "RunConfig":
        """From ``argparse``'s namespace (options not in this class, e.g. ``config``, are dropped)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in vars(ns).items() if k in names})

    @classmethod
    def from_options(cls, **options) -> "RunConfig":
        """From keyword options (the Python API); an unknown option is a :class:`ConfigError`."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(options) - names)
        if bad:
            raise ConfigError(f"unknown option(s) {', '.join(bad)}; known: {', '.join(sorted(names))}")
        return cls(**options)


@dataclass
class RunContext:
    """What the stages of one run share; each stage fills its part (see :data:`STAGES`).

    Attributes:
        cfg: the options.
        model_object, dataset_object: a network or data set handed in from Python (else built from ``cfg``).
        folder: the run's staging folder (:class:`~dpap_deploy.runfolder.RunFolder`).
        timing: seconds per stage and per part of one (``lava_sim``, ``emulator``, ``probe``, ...;
            ``report.json``'s ``timing_s``, :func:`dpap_deploy.stages._timing`), ``startup`` and ``total``.
        started: ``time.perf_counter()`` when the run began (the CLI's start, else :func:`run_pipeline`'s).
        norse_pops: every population's Norse spikes on the test split (``verify``; ``measure`` uses them).
        file_network: with ``--from FILE``, the network read from the file
            (:class:`~dpap_deploy.foreign.FileNetwork`; also ``model``), else None.
    """

    cfg: RunConfig
    model_object: Any = None
    dataset_object: Any = None
    progress: bool = False
    folder: Any = None
    dist: Any = None
    profile: Any = None
    exporter: Any = None
    family: Any = None
    dpap_cfg: Any = None
    budget: Any = None
    resume_ckpt: Optional[dict] = None
    from_run: Optional[dict] = None
    dataset: Any = None
    data_spec: Optional[str] = None
    device: str = "cpu"
    encoder: Any = None
    model: Any = None
    train_result: Any = None
    history: List[dict] = field(default_factory=list)
    ir: Any = None
    x_test: Any = None
    y_test: Any = None
    result: Any = None
    exported: Any = None
    accuracy: Dict[str, float] = field(default_factory=dict)
    agreement: Dict[str, Any] = field(default_factory=dict)
    mapping: Any = None
    probe: Any = None
    energy: Optional[dict] = None
    plots: List[str] = field(default_factory=list)
    report: Optional[dict] = None
    timing: Dict[str, float] = field(default_factory=dict)
    started: Optional[float] = None
    norse_pops: Optional[list] = None
    file_network: Any = None
    done: bool = False   # a stage ended the run early (e.g. the ranks of a torchrun job other than 0)
    exit_code: int = 0


def run_pipeline(cfg: RunConfig, model: Any = None, dataset: Any = None,
                 stop_after: Optional[str] = None, started: Optional[float] = None) -> RunContext:
    """Run the stages of one run in order.

    Args:
        cfg: the options.
        model: a network from Python (a ``SequentialState``/``Sequential`` or a
            :class:`~dpap_deploy.train.models.SequentialNet`) instead of ``cfg.model``.
        dataset: a :class:`~dpap_deploy.data.Dataset` or ``(x, y)`` arrays instead of ``cfg.data``.
        stop_after: end after this stage (tests look at one stage at a time); the staging folder
            is then left as it is, nothing moves into place.
        started: ``time.perf_counter()`` at the start of the whole run (``dpap-export`` passes its
            own start), counted in ``timing["total"]`` and as ``timing["startup"]``; None: now.

    Returns:
        The context: ``ctx.report`` is the run's ``report.json``; ``ctx.exit_code`` 0, or 3 when the
        network does not fit and ``require_fit`` (or a budget) was set.

    Raises:
        DpapError: bad input (nothing is written), or a stage failed (the staging folder is removed
            and an earlier run in ``cfg.out`` is left as it was); TrainingInterrupted on Ctrl-C.
    """
    from dpap_deploy.stages import STAGES

    t_start = time.perf_counter()
    ctx = RunContext(cfg, model_object=model, dataset_object=dataset, started=started or t_start)
    ctx.timing["startup"] = t_start - ctx.started
    try:
        for name, stage in STAGES:
            t0 = time.perf_counter()
            stage(ctx)
            ctx.timing[name] = ctx.timing.get(name, 0.0) + time.perf_counter() - t0
            if ctx.done or name == stop_after:
                return ctx
        ctx.folder.commit()
    except BaseException as exc:
        if ctx.folder is not None:
            ctx.folder.abandon(exc)
        raise
    finally:
        ctx.timing["total"] = time.perf_counter() - ctx.started
    return ctx


def deploy(model: Any = "snn-mlp", data: Any = None, target: str = "loihi-sim", out: str = "runs/latest",
           **options) -> dict:
    """Train (with DPAP by default), export, simulate, map and report one network: the Python API.

    Args:
        model: a model family name (``snn-mlp``, ``snn-cnn``, ``snn-2c2f``, ``ann-mlp``),
            ``PATH.py:FUNCTION``, or a network object: a Norse ``SequentialState`` (or
            ``torch.nn.Sequential``) of ``Linear``, ``Conv2d``, ``AvgPool2d``, ``Flatten`` and Norse
            ``LIFCell`` layers, run one time step at a time on ``(B, *sample_shape)``.
        data: a data source (``digits``, ``wine``, ``PATH.npz``, ``nmnist:ROOT``, ...), a
            :class:`~dpap_deploy.data.Dataset`, or ``(x, y)`` arrays shaped as an ``.npz`` would be
            (``x`` ``(N, F)``, ``(N, T, F)`` or ``(N, T, C, H, W)``; ``y`` ``(N,)``); None: the
            family's default.
        target: export target.
        out: output folder (replaced only when the run succeeds; pass ``force=True`` to replace a run).
        options: any other option of :class:`RunConfig` (``epochs``, ``time_steps``, ``encoding``,
            ``profile``, ``device``, ``pruner``, ...).

    Returns:
        The run's report (the contents of ``out/report.json``).

    Raises:
        DpapError: bad input (the message names what and the limit), as the CLI reports it.
    """
    name = model if isinstance(model, str) else "snn-mlp"
    spec = data if isinstance(data, str) or data is None else None
    cfg = RunConfig.from_options(model=name, data=spec, target=target, out=out, quiet=options.pop("quiet", True),
                                 **options)
    ctx = run_pipeline(cfg, model=None if isinstance(model, str) else model,
                       dataset=None if spec is not None or data is None else data)
    return ctx.report
