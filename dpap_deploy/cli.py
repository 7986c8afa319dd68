"""``dpap-export``: train with DPAP, export, simulate in Lava, check against a chip.

Example::

    dpap-export --target loihi-sim --profile loihi2 --out runs/demo
    dpap-export --target loihi-sim --from runs/demo --profile loihi1 --out runs/loihi1

    dpap-report --profile loihi1 runs/demo          # re-check an exported network, no retraining

    dpap-export --config run.toml --epochs 10       # options from a TOML file; flags win
    dpap-export --resume runs/demo                  # continue an interrupted run (Ctrl-C saves one)

Exit codes: 0 done; 2 bad input (the message names what and the limit); 3 the network
does not fit the profile and ``--require-fit`` was given (``dpap-report``: whenever it does
not fit), so both can gate a CI pipeline; 130 interrupted (Ctrl-C), with a checkpoint to
``--resume`` from when training was under way.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import List, NamedTuple, Optional


from dpap_deploy.errors import DataError, DpapError, IRError, TrainingInterrupted

EXIT_BAD_INPUT = 2
EXIT_DOES_NOT_FIT = 3
EXIT_INTERRUPTED = 130
#: options --resume accepts next to it (the rest come from the run's run.toml)
RESUME_OPTIONS = ("resume", "quiet", "debug", "log_level")
log = logging.getLogger("dpap_deploy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpap-export",
        description="Train a DPAP-pruned spiking network in Norse (or reuse one with --from), export it, "
        "run it in Lava's fixed-point simulator and check it against a hardware profile.",
    )
    p.add_argument("--target", default=None, help="export target, e.g. loihi-sim (required, here or in --config)")
    p.add_argument("--config", metavar="TOML", help="read options from a TOML file (keys: the long option names); "
                   "flags on the command line override it")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its own settings "
                   "(DIR/run.toml, DIR/checkpoint.safetensors)")
    p.add_argument("--profile", default="loihi2",
                   help="bundled profile (loihi2, loihi1, loihi2-sim, kapoho-point, truenorth, xylo-audio2) or a .toml path")
    p.add_argument("--chips", type=int, default=None, help="chips on the board (default: the profile's)")
    p.add_argument("--no-pack", action="store_true", help="one layer per core (do not let small layers share cores)")
    p.add_argument("--budget-cores", type=int, default=None, metavar="N",
                   help="train until the network fits N cores of --profile: DPAP prunes the layers over their "
                   "targets harder and stops pruning once it fits (exit 3 if it never does)")
    p.add_argument("--fit", action="store_true", help="like --budget-cores with all cores of --profile x --chips")
    p.add_argument("--check-only", action="store_true",
                   help="with --from: only map the exported network onto --profile (no simulation); exit 3 if it does not fit")
    p.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    p.add_argument("--force", action="store_true", help="reuse an output folder that already holds a run")
    p.add_argument("--from", dest="from_dir", metavar="DIR", help="export the network of an earlier run, no training")
    p.add_argument("--data", metavar="FILE", help=".npz with x (N, ...) and y (N,); default: scikit-learn digits")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, split, batches and spike encoding")
    p.add_argument("--time-steps", type=int, default=32, help="time steps T per sample (default 32)")
    p.add_argument("--hidden", default=None,
                   help="hidden fully connected sizes (default 256,128; 64 for snn-cnn)")
    p.add_argument("--model", default="snn-mlp", choices=("snn-mlp", "snn-cnn", "snn-2c2f", "ann-mlp"),
                   help="snn-mlp (Norse LIF MLP on rate-coded digits, default), snn-cnn (Norse conv SNN on "
                   "event-digits, 20x20 DVS frames), snn-2c2f (the paper's 15C3-AP2-40C3-AP2-300FC-10FC on event-digits) "
                   "or ann-mlp (PyTorch ReLU MLP, DPAP's ANN variant; target onnx)")
    p.add_argument("--channels", default=None, help="snn-cnn: conv channels per block (conv3x3-LIF-avgpool2; "
                   "default 8,16; snn-2c2f: the paper's 15,40 with hidden 300)")
    p.add_argument("--timestep-pruning", metavar="EPSILON,ETA", default=None,
                   help="spatio-temporal DPAP (paper eq. 8): also prune (neuron, time step) pairs with decay value "
                   "EPSILON and decay rate ETA (e.g. 1.5,13); steps pruned for every neuron at the window's end "
                   "shorten the deployed T")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--no-prune", action="store_true", help="train dense (baseline), no DPAP")
    p.add_argument("--dpap-preset", default=None,
                   help="DPAP constants: mnist-snn (default for snn-mlp; the author's MNIST SNN script), mnist-ann "
                   "(default for ann-mlp) or cifar-snn (the spec's defaults)")
    p.add_argument("--max-test", type=int, default=None, help="simulate only the first N test samples")
    p.add_argument("--require-fit", action="store_true", help="exit with 3 when the network does not fit the profile")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr is not a terminal)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                   help="log messages on stderr from this level up (default warning; info: each stage)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _positive(name: str, v: Optional[int], minimum: int = 1) -> None:
    if v is not None and v < minimum:
        raise DpapError(f"--{name} must be >= {minimum}, got {v}")


def _hidden(text: str) -> List[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DpapError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise DpapError(f"--hidden sizes must be >= 1, got {text!r}")
    return sizes


def _prepare_out(out: str, force: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise DpapError(f"output {out!r} exists and is not a folder")
    if os.path.isfile(os.path.join(out, "report.json")) and not force:
        raise DpapError(f"output folder {out!r} already holds a run; pass --force to overwrite it or choose another --out")
    from dpap_deploy.train.checkpoint import CHECKPOINT_FILE

    if os.path.isfile(os.path.join(out, CHECKPOINT_FILE)) and not force:
        raise DpapError(f"output folder {out!r} holds an unfinished run; continue it with --resume {out}, "
                        "or pass --force to start over")
    from dpap_deploy.fileio import ensure_writable_dir

    ensure_writable_dir(out)


def _with_timestep_rule(cfg, text: str, model: str):
    """The DPAP config with spatio-temporal pruning: ``EPSILON,ETA`` (paper names) as the timestep
    rule's ``c`` and ``rho``; ``b`` = 2, the fully connected protection (spec sec. 4)."""
    from dataclasses import replace

    from dpap_deploy.train.dpap import RuleConstants

    try:
        eps, eta = (float(v) for v in text.split(","))
    except ValueError:
        raise DpapError(f"--timestep-pruning takes EPSILON,ETA (two numbers), got {text!r}") from None
    if not (0.0 < eps < 2.0) or eta <= 0:
        raise DpapError(f"--timestep-pruning EPSILON must be in (0, 2) (at 2 nothing is protected) and ETA > 0, "
                        f"got {text!r}")
    if model == "ann-mlp":
        raise DpapError("--timestep-pruning prunes time steps of spiking networks; --model ann-mlp has none")
    return replace(cfg, timestep=RuleConstants(eps, 2.0, eta))


def preload_lava() -> None:
    """Import Lava's runtime first: it calls ``multiprocessing.set_start_method('fork')`` at
    import time, which fails once anything (tqdm's lock, torch) has fixed the start method."""
    import lava.magma.core.process.process  # noqa: F401


def run(args: argparse.Namespace) -> int:
    preload_lava()
    import numpy as np
    import torch

    from dpap_deploy.data import load_digits, load_npz
    from dpap_deploy.export import get_target
    from dpap_deploy.fileio import atomic_path, write_json
    from dpap_deploy.hardware_profiles import load_profile
    from dpap_deploy.ir import NetworkIR
    from dpap_deploy.mapping import map_network
    from dpap_deploy.report import model_section, summary_text, validate
    from dpap_deploy.train.compact import to_ir
    from dpap_deploy.train.dpap import PRESETS
    from dpap_deploy.train.loop import TrainConfig, classify, predict, test_spikes, train
    from dpap_deploy.train.models import model_from_config

    # -- check every input before any work ----------------------------------------------
    if not args.target:
        raise DpapError("--target is required (on the command line, or target = \"...\" in --config)")
    exporter = get_target(args.target)
    profile = load_profile(args.profile)
    if args.chips is not None:
        profile = profile.with_chips(args.chips)
    if args.check_only:
        if not args.from_dir:
            raise DpapError("--check-only needs --from DIR (the run whose exported network to check)")
        return check(args.from_dir, profile, pack=not args.no_pack)
    budget = None
    if args.budget_cores is not None or args.fit:
        from dpap_deploy.budget import Budget

        if args.no_prune or args.from_dir:
            raise DpapError("--budget-cores/--fit drive DPAP during training; they cannot be used with --no-prune or --from")
        if args.budget_cores is not None:
            profile = profile.with_cores(args.budget_cores)
        budget = Budget(profile, pack=not args.no_pack)
    _positive("time-steps", args.time_steps)
    _positive("epochs", args.epochs)
    _positive("batch-size", args.batch_size)
    _positive("max-test", args.max_test)
    if args.model == "snn-2c2f":  # the paper's 2C2F for event data: 15C3-AP2-40C3-AP2-300FC-10FC
        args.channels, args.hidden = args.channels or "15,40", args.hidden or "300"
    hidden = _hidden(args.hidden or ("64" if args.model == "snn-cnn" else "256,128"))
    channels = _hidden(args.channels or "8,16")
    if args.dpap_preset is None:
        args.dpap_preset = "mnist-ann" if args.model == "ann-mlp" else "mnist-snn"
    if args.dpap_preset not in PRESETS:
        raise DpapError(f"unknown --dpap-preset {args.dpap_preset!r}; known: {', '.join(sorted(PRESETS))}")
    dpap_cfg = PRESETS[args.dpap_preset]
    if args.timestep_pruning:
        dpap_cfg = _with_timestep_rule(dpap_cfg, args.timestep_pruning, args.model)
    progress = not args.quiet and sys.stderr.isatty()
    from dpap_deploy.train.distributed import local_world_size

    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // local_world_size())))  # torchrun: shared

    cfg = {"seed": args.seed, "time_steps": args.time_steps, "data": args.data, "test_fraction": 0.2,
           "model": args.model}
    if args.from_dir:
        from dpap_deploy.rundir import read_run_config

        saved = read_run_config(args.from_dir)
        cfg.update({k: saved[k] for k in ("seed", "time_steps", "data", "test_fraction", "model") if k in saved})
        if args.data:
            cfg["data"] = args.data
    cnn = cfg["model"] in ("snn-cnn", "snn-2c2f")
    if cnn and cfg["data"]:
        raise DpapError("--model snn-cnn trains on the bundled event-digits; --data is for the MLPs")
    if cnn:
        from dpap_deploy.events import load_event_digits

        ds = load_event_digits(time_steps=cfg["time_steps"], test_fraction=cfg["test_fraction"], seed=cfg["seed"])
    elif cfg["data"]:
        ds = load_npz(cfg["data"], cfg["test_fraction"], cfg["seed"])
    else:
        ds = load_digits(cfg["test_fraction"], cfg["seed"])
    ann = cfg["model"] == "ann-mlp"
    if exporter.takes == "ann" and not ann:
        raise DpapError(f"target {args.target} exports ANNs; train one with --model ann-mlp")
    if exporter.takes == "snn" and ann:
        raise DpapError(f"target {args.target} needs a spiking network; --model ann-mlp goes to target onnx")
    if budget is not None and cfg["model"] != "snn-mlp":
        raise DpapError("--budget-cores/--fit drive the spiking MLP (--model snn-mlp)")
    if budget is not None:  # an impossible budget stops before anything is written
        budget.check_feasible([ds.n_features, *hidden, ds.n_classes], prunable=len(hidden))
    from dpap_deploy.rundir import MODEL_FILE, load_model, save_model
    from dpap_deploy.train.checkpoint import CHECKPOINT_FILE

    ckpt_path = os.path.join(args.out, CHECKPOINT_FILE)
    resume_ckpt = None
    if args.resume and not args.from_dir:
        from dpap_deploy.train.checkpoint import load_checkpoint

        resume_ckpt = load_checkpoint(ckpt_path)
        log.info("resuming %s at epoch %d batch %d", args.out, resume_ckpt["position"]["epoch"],
                 resume_ckpt["position"]["batch"])
    else:
        _prepare_out(args.out, args.force)

    def save_run_toml() -> None:  # once every input has been checked: a refused run writes nothing
        if not args.resume:
            from dpap_deploy.config import effective_config, write_config

            write_config(os.path.join(args.out, "run.toml"), effective_config(args, build_parser()))

    # -- train (or load) ----------------------------------------------------------------
    from dpap_deploy.train.distributed import setup as setup_distributed

    dist = setup_distributed()  # under torchrun: this rank of a data-parallel run (gloo); else one process
    progress = progress and dist.is_main
    timing = {"train": 0.0}
    history = []
    if args.from_dir:
        if _others_leave(dist):
            return 0
        ir = NetworkIR.load(os.path.join(args.from_dir, "ir.npz"))
        model, _ = load_model(os.path.join(args.from_dir, MODEL_FILE))  # NetworkFileError naming the file
        if not cnn and (ir.input_size != ds.n_features or ir.n_classes < ds.n_classes):
            raise DataError(f"data {ds.name!r} has {ds.n_features} features and {ds.n_classes} classes; the network "
                            f"in {args.from_dir!r} takes {ir.input_size} inputs and has {ir.n_classes} outputs")
        train_cfg = None
        save_run_toml()
    else:
        train_cfg = TrainConfig(hidden=hidden, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                time_steps=args.time_steps, seed=args.seed, prune=not args.no_prune)
        from dpap_deploy.fileio import StagedFile

        # staged under a temporary name, renamed when training ends: an interrupted or failed
        # training leaves an earlier run's log as it was (a resumed run rewrites the epochs it had);
        # under torchrun rank 0 alone writes it
        train_log = StagedFile(os.path.join(args.out, "train_log.jsonl")) if dist.is_main else None
        for rec in (resume_ckpt["history"] if resume_ckpt and train_log else []):
            train_log.write(json.dumps(rec) + "\n")

        def on_epoch(rec):
            train_log.write(json.dumps(rec) + "\n")
            train_log.flush()
            log.debug("epoch %d: %s", rec["epoch"], json.dumps({k: v for k, v in rec.items() if k != "layers"}))

        save_run_toml()
        log.info("training %s (%s) for %d epochs", cfg["model"], "dense" if args.no_prune else "DPAP", args.epochs)
        resumable = dict(checkpoint=ckpt_path, resume=resume_ckpt, dist=dist)
        try:
            if ann:
                from dpap_deploy.train.models import ANNMLP

                torch.manual_seed(args.seed)
                res = train(ds, train_cfg, dpap_cfg, progress=progress, on_epoch=on_epoch,
                            model=ANNMLP([ds.n_features, *hidden, ds.n_classes]), input_kind="static", **resumable)
            elif cnn:
                from dpap_deploy.train.models import SpikingCNN

                torch.manual_seed(args.seed)
                res = train(ds, train_cfg, dpap_cfg, progress=progress, on_epoch=on_epoch,
                            model=SpikingCNN(ds.x_train.shape[2:], channels, hidden, ds.n_classes),
                            input_kind="frames", **resumable)
            else:
                res = train(ds, train_cfg, dpap_cfg, progress=progress, on_epoch=on_epoch,
                            budget=budget, **resumable)
        except BaseException:
            if train_log is not None:
                train_log.discard()
            raise
        if train_log is not None:
            train_log.commit()
        if _others_leave(dist):
            return 0
        model, history = res.model, res.history
        timing["train"] = res.seconds
        meta = {"trained_with": "dpap" if train_cfg.prune else "dense", "seed": args.seed}
        if ann:
            from dpap_deploy.train.compact import ann_to_ir

            ir = ann_to_ir(model, name="digits-ann" if not cfg["data"] else "ann", metadata=meta)
        elif cnn:
            from dpap_deploy.train.compact import cnn_to_ir

            ir = cnn_to_ir(model, args.time_steps, name="event-digits-cnn", metadata=meta)
        else:
            ir = to_ir(model, args.time_steps, name="digits-snn" if not cfg["data"] else "snn", metadata=meta)
        ir.save(os.path.join(args.out, "ir.npz"))
        save_model(os.path.join(args.out, MODEL_FILE), model, train_config=train_cfg.to_dict(),
                   dpap_state=res.state.state_dict() if res.state is not None else None)
        write_json(os.path.join(args.out, "config.json"), {**cfg, "train": train_cfg.to_dict(), "target": args.target,
                                                           "profile": args.profile})

    # -- evaluate in Norse, export, simulate ---------------------------------------------
    y_test = ds.y_test
    if ann:
        x_test = ds.x_test.astype("float32")
        if args.max_test:
            x_test, y_test = x_test[: args.max_test], y_test[: args.max_test]
    else:
        if cnn:
            from dpap_deploy.train.loop import encode

            x_test = encode(ds.x_test, "frames", cfg["time_steps"], cfg["seed"])
        else:
            x_test = test_spikes(ds, cfg["time_steps"], cfg["seed"])
        if args.max_test:
            x_test, y_test = x_test[:, : args.max_test], y_test[: args.max_test]
        if ir.time_steps < x_test.shape[0]:  # timestep pruning removed the window's last steps
            log.info("timestep pruning shortened the window from %d to %d time steps", x_test.shape[0], ir.time_steps)
            x_test = x_test[: ir.time_steps]
    pred_norse = classify(predict(model, x_test))
    t0 = time.perf_counter()
    result = exporter(ir, args.out, spikes=x_test, progress=progress)
    timing["export"] = time.perf_counter() - t0 - result.seconds.get("run", 0.0)
    timing["lava_sim"] = result.seconds.get("run", 0.0)
    sim_key = result.extra.get("accuracy_key", "lava")
    if result.extra.get("message"):
        print(f"note      {result.extra['message']}", file=sys.stderr)
    pred_lava = classify(result.counts) if result.counts is not None else None
    exported = result.network if result.network is not None else ir
    mapping = map_network(exported, profile, pack=not args.no_pack)
    accuracy_extra, agreement_extra = {}, {}
    if exported.quantized and pred_lava is not None:
        # the batched fixed-point emulator on the same input: what training can use per epoch
        from dpap_deploy.export.emulator import emulate

        t0 = time.perf_counter()
        emu_counts, emu_rasters = emulate(exported, x_test, record=result.output_spikes is not None,
                                          progress=progress)
        timing["emulator"] = time.perf_counter() - t0
        pred_emu = classify(emu_counts)
        accuracy_extra["emulator"] = float((pred_emu == y_test).mean())
        agreement_extra["emulator_predictions"] = float((pred_emu == pred_lava).mean())
        if result.output_spikes is not None:
            agreement_extra["spikes"] = float((emu_rasters[-1] == result.output_spikes).mean())
    from dpap_deploy.plots import plot_pruning
    from dpap_deploy.resources import plot_resources

    log.info("writing plots and the report")
    plots = [plot_resources(mapping.to_report(), os.path.join(args.out, "resources.png")),
             plot_pruning(history, os.path.join(args.out, "pruning.png"),
                          title=f"DPAP on {ds.name}" if train_cfg and train_cfg.prune else f"dense training on {ds.name}")]
    probe = None
    if not ann:  # every population in Lava for the first samples: raster.png and Lava's synaptic ops
        probe = _lava_probe(exported, x_test)
        plots.append(_raster_png(probe, y_test, args.out))

    model_sec = model_section(exported, result.synapses_per_layer,
                              result.extra.get("synapses_counted_from", f"the {args.target} export"))
    energy = None
    if not ann:  # paper eqs. 14-15 and measured synaptic operations, Norse and (when it ran) Lava
        from dpap_deploy.energy import energy_section
        from dpap_deploy.train.loop import population_spikes

        norse_pops = population_spikes(model, x_test)
        n = probe.x.shape[1]
        energy = energy_section(exported, model_sec["sparsity"], norse=[x_test] + norse_pops[:-1],
                                lava=[probe.x] + list(probe.hidden),
                                norse_probe=[probe.x] + [p[:, :n] for p in norse_pops[:-1]])
    report = {
        "target": args.target,
        "profile": profile.name,
        "dataset": {"name": ds.name, "n_train": int(len(ds.y_train)), "n_test": int(len(y_test)),
                    "time_steps": 1 if ann else int(cfg["time_steps"]),
                    "n_features": int(np.prod(ds.x_train.shape[2:])) if cnn else ds.n_features, "n_classes": ds.n_classes,
                    "seed": cfg["seed"]},
        "model": model_sec,
        "energy": energy,
        "accuracy": {("torch" if ann else "norse"): float((pred_norse == y_test).mean()),
                     **({sim_key: float((pred_lava == y_test).mean())} if pred_lava is not None else {}),
                     **accuracy_extra},
        "agreement": {"predictions": float((pred_norse == pred_lava).mean()) if pred_lava is not None else None,
                      "compared": f"{'torch' if ann else 'norse'} vs {sim_key}", **agreement_extra},
        "resources": mapping.to_report(),
        "budget": budget.to_report() if budget is not None else None,
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "fixed_point": result.extra.get("fixed_point"),
        "target_notes": [result.extra["message"]] if result.extra.get("message") else [],
        "training": {"config": train_cfg.to_dict() if train_cfg else None, "epochs": len(history),
                     "from": args.from_dir},
        "files": result.files + [{"path": os.path.join(args.out, f), "verified_by": None}
                                 for f in ("ir.npz", MODEL_FILE) if os.path.isfile(os.path.join(args.out, f))]
        + [{"path": p, "verified_by": None} for p in plots if p]
        + [{"path": os.path.join(args.out, f), "verified_by": None} for f in ("run.toml", CHECKPOINT_FILE, "train_log.jsonl")
           if os.path.isfile(os.path.join(args.out, f))],
    }
    validate(report)
    write_json(os.path.join(args.out, "report.json"), report)
    from dpap_deploy.report import markdown_report

    with atomic_path(os.path.join(args.out, "report.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(markdown_report(report, [os.path.basename(p) for p in plots if p]))
    print(summary_text(report))
    print(f"report    {os.path.join(args.out, 'report.json')}, {os.path.join(args.out, 'report.md')}")
    if (args.require_fit or budget is not None) and not mapping.fits:
        return EXIT_DOES_NOT_FIT
    return 0


class LavaProbe(NamedTuple):
    """Every population in Lava for the first test samples (:func:`_lava_probe`)."""

    x: "np.ndarray"             # input spikes (T, n, ...)
    hidden: list                # per hidden layer (T, n, n_l)
    output: "np.ndarray"        # output spikes (T, n, C)
    counts: "np.ndarray"        # output spike counts (n, C)
    ir: object                  # the quantised network that ran


def _lava_probe(ir, x_test, samples: int = 32) -> LavaProbe:
    """The first ``samples`` test samples through Lava's fixed-point simulator with a sink on
    every population (sinks make Lava several times slower, so not on the whole split)."""
    from dpap_deploy.export import lava_sim
    from dpap_deploy.export.quantize import quantize

    q = ir if ir.quantized else quantize(ir)
    x = x_test[:, :samples]
    counts, info = lava_sim.run(q, x, record_hidden=True)
    return LavaProbe(x, info["hidden_spikes"], info["output_spikes"], counts, q)


def _raster_png(probe: LavaProbe, y_test, out: str) -> Optional[str]:
    """``raster.png``: input, hidden and output spikes of test sample 0 as Lava's fixed-point
    simulator produced them."""
    from dpap_deploy.plots import plot_raster

    x = probe.x
    pops = [("input", x[:, 0].reshape(x.shape[0], -1))]
    pops += [(l.name, h[:, 0]) for l, h in zip(probe.ir.layers[:-1], probe.hidden)]
    pops.append((probe.ir.layers[-1].name + " (output)", probe.output[:, 0]))
    title = (f"test sample 0 (label {int(y_test[0])}, predicted {int(probe.counts[0].argmax())}) in Lava "
             f"Loihi2SimCfg fixed point, T = {x.shape[0]}")
    return plot_raster(pops, os.path.join(out, "raster.png"), title)


def _others_leave(dist) -> bool:
    """Under torchrun, after training: every rank leaves the process group; True on the ranks
    other than 0, which stop there (exit 0) while rank 0 exports, simulates and reports."""
    dist.close()
    return not dist.is_main


def load_exported(run_dir: str):
    """The exported network of a run folder (``network.npz``, else ``ir.npz``), or of one
    network file (netx ``.net``, NIR ``.nir``, IR ``.npz``) given in its place.

    Raises:
        IRError: the folder holds neither, or the file is not a network of ours (names it).
    """
    from dpap_deploy.ir import NetworkIR

    if os.path.isfile(run_dir):  # one network file: .net, .nir or .npz
        from dpap_deploy.rundir import read_network_file

        return read_network_file(run_dir)
    for name in ("network.npz", "ir.npz"):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return NetworkIR.load(path)
    raise IRError(f"{run_dir!r} holds no exported network (network.npz or ir.npz); run dpap-export first")


def check(run_dir: str, profile, pack: bool = True, as_json: bool = False, plot: Optional[str] = None) -> int:
    """Map a run's exported network onto ``profile``, print the tables; 0 if it fits, else 3."""
    from dpap_deploy.mapping import map_network
    from dpap_deploy.resources import plot_resources, resources_text

    res = map_network(load_exported(run_dir), profile, pack=pack).to_report()
    print(json.dumps(res, indent=2) if as_json else resources_text(res))
    if plot:
        plot_resources(res, plot)
    return 0 if res["fits"] else EXIT_DOES_NOT_FIT


def _guarded(prog: str, args, fn) -> int:
    try:
        return fn()
    except TrainingInterrupted as exc:
        run_dir = os.path.dirname(exc.path) or "."
        print(f"{prog}: {exc}\n{prog}: continue with: dpap-export --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DpapError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``dpap-export``'s options: the command line over ``--config``'s file; with ``--resume DIR``,
    DIR's ``run.toml`` (only ``--quiet``, ``--log-level`` and ``--debug`` may be added).

    Raises:
        ConfigError: a bad config file, or options given next to ``--resume``.
    """
    from dpap_deploy.config import explicit_options, parse_with_config

    argv = list(sys.argv[1:] if argv is None else argv)
    first = build_parser().parse_args(argv)
    if first.resume:
        from dpap_deploy.errors import ConfigError

        extra = [d for d in explicit_options(argv, build_parser()) if d not in RESUME_OPTIONS]
        if extra:
            raise ConfigError(f"--resume continues {first.resume!r} with its own settings ({first.resume}/run.toml); "
                              f"drop {', '.join('--' + d.replace('_', '-') for d in extra)}")
        path = os.path.join(first.resume, "run.toml")
        if not os.path.isfile(path):
            raise ConfigError(f"--resume {first.resume!r}: no run.toml there, so no dpap-export run to continue")
        args = parse_with_config(build_parser(), [], path)
        args.out, args.resume, args.force = first.resume, first.resume, True
        args.quiet, args.debug, args.log_level = first.quiet, first.debug, first.log_level
        return args
    return parse_with_config(build_parser(), argv, first.config) if first.config else first


def main(argv: Optional[List[str]] = None) -> int:
    first = build_parser().parse_args(argv)  # argparse errors (exit 2) and --debug before anything else
    logging.basicConfig(level=getattr(logging, first.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    def go():
        args = parse_args(argv)
        logging.getLogger().setLevel(getattr(logging, args.log_level.upper()))
        return run(args)

    return _guarded("dpap-export", first, go)


def report_main(argv: Optional[List[str]] = None) -> int:
    """``dpap-report [--profile P] [--chips N] DIR``: will the exported network of DIR fit?"""
    p = argparse.ArgumentParser(prog="dpap-report", description="Map the exported network of a dpap-export run onto "
                                "a hardware profile, without retraining. Exit 0 when it fits, 3 when it does not, 2 on bad input.")
    p.add_argument("run_dir", metavar="DIR", help="a dpap-export output folder, or one network file (.net, .nir, .npz)")
    p.add_argument("--profile", default="loihi2", help="bundled profile name or a .toml path")
    p.add_argument("--chips", type=int, default=None, help="chips on the board (default: the profile's)")
    p.add_argument("--no-pack", action="store_true", help="one layer per core")
    p.add_argument("--json", action="store_true", help="print the resources section as JSON")
    p.add_argument("--plot", metavar="PNG", help="also draw per-core utilisation to this file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def go():
        from dpap_deploy.hardware_profiles import load_profile

        profile = load_profile(args.profile)
        if args.chips is not None:
            profile = profile.with_chips(args.chips)
        return check(args.run_dir, profile, pack=not args.no_pack, as_json=args.json, plot=args.plot)

    return _guarded("dpap-report", args, go)


if __name__ == "__main__":
    sys.exit(main())
