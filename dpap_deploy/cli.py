"""``dpap-export``: train with DPAP, export, simulate in Lava, check against a chip.

Example::

    dpap-export --target loihi-sim --profile loihi2 --out runs/demo
    dpap-export --target loihi-sim --from runs/demo --profile loihi1 --out runs/loihi1
    dpap-export --target loihi-sim --model snn-cnn --data my_events.npz --out runs/events
    dpap-export --target loihi-sim --model mynet.py:build --data my_events.npz --out runs/mine
    dpap-export --target onnx --model ann-mlp --data wine --out runs/wine-ann
    dpap-export --target loihi-sim --from slayer_net.net --data my_events.npz --out runs/slayer

    dpap-report --profile loihi1 runs/demo          # re-check an exported network, no retraining

    dpap-export --config run.toml --epochs 10       # options from a TOML file; flags win
    dpap-export --resume runs/demo                  # continue an interrupted run (Ctrl-C saves one)

This module only parses the command line; the run itself is :func:`dpap_deploy.pipeline.run_pipeline`.

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
from typing import List, Optional

from dpap_deploy.errors import DpapError, IRError, TrainingInterrupted

EXIT_BAD_INPUT = 2
EXIT_DOES_NOT_FIT = 3
EXIT_INTERRUPTED = 130
#: options --resume accepts next to it (the rest come from the run's run.toml)
RESUME_OPTIONS = ("resume", "quiet", "debug", "log_level")
log = logging.getLogger("dpap_deploy")


def _names(registry) -> str:
    return ", ".join(registry.names())


def build_parser() -> argparse.ArgumentParser:
    """``dpap-export``'s options; the choices of units come from their registries."""
    from dpap_deploy.data import SOURCES
    from dpap_deploy.data.encoding import ENCODINGS
    from dpap_deploy.export import TARGETS
    from dpap_deploy.train.families import FAMILIES
    from dpap_deploy.train.pruners import PRUNERS

    p = argparse.ArgumentParser(
        prog="dpap-export",
        description="Train a DPAP-pruned spiking network in Norse (or reuse one with --from), export it, "
        "run it in Lava's fixed-point simulator and check it against a hardware profile.")
    a = p.add_argument
    a("--target", default=None, help=f"export target: {_names(TARGETS)} (required, here or in --config)")
    a("--config", metavar="TOML", help="read options from a TOML file (keys: the long option names); flags win")
    a("--resume", metavar="DIR", help="continue the interrupted run of DIR with its own settings")
    a("--profile", default="loihi2", help="bundled profile (loihi2, loihi1, loihi2-sim, kapoho-point, truenorth, "
      "xylo-audio2) or a .toml path")
    a("--chips", type=int, default=None, help="chips on the board (default: the profile's)")
    a("--no-pack", action="store_true", help="one layer per core (do not let small layers share cores)")
    a("--budget-cores", type=int, default=None, metavar="N", help="train until the network fits N cores of "
      "--profile: DPAP prunes the layers over their targets harder and stops once it fits (exit 3 if it never does)")
    a("--fit", action="store_true", help="like --budget-cores with all cores of --profile x --chips")
    a("--check-only", action="store_true",
      help="with --from: only map the exported network onto --profile (no simulation); exit 3 if it does not fit")
    a("--out", default="runs/latest", help="output folder (default: runs/latest); written when the run succeeds")
    a("--force", action="store_true", help="replace an output folder that already holds a run")
    a("--from", dest="from_dir", metavar="DIR|FILE", help="export the network of an earlier run (its folder), or a "
      "network trained elsewhere (a lava-dl netx .net, a NIR .nir or our IR .npz file, with --data giving the "
      "input), no training")
    a("--data", metavar="SPEC", help=f"data: a source ({_names(SOURCES)}; NAME:ARG for nmnist:ROOT, tonic:NAME:ROOT) "
      "or an .npz with x (N, F) | (N, T, F) | (N, T, C, H, W) and y (N,); default: the model family's")
    a("--model", default="snn-mlp", help=f"model family ({_names(FAMILIES)}) or PATH.py:FUNCTION, a function "
      "(input_shape, n_classes) -> Norse SequentialState of Linear, Conv2d, AvgPool2d, Flatten and LIFCell")
    a("--encoding", default="rate", choices=ENCODINGS.names(),
      help="static features into a spiking network: rate (Bernoulli spikes) or current (constant input current "
      "into the first population; Lava: its bias)")
    a("--epochs", type=int, default=40, help="training epochs (default 40)")
    a("--seed", type=int, default=0, help="seed of weights, split, batches and spike encoding")
    a("--time-steps", type=int, default=None, help="time steps T per sample (default: the data's own T; 32 for "
      "encoded static data and generated event data)")
    a("--hidden", default=None, help="hidden fully connected sizes (default 256,128; 64 for snn-cnn)")
    a("--channels", default=None, help="conv channels per block (snn-cnn default 8,16; snn-2c2f 15,40)")
    a("--timestep-pruning", metavar="EPSILON,ETA", default=None, help="spatio-temporal DPAP (paper eq. 8): also "
      "prune (neuron, time step) pairs with decay value EPSILON and decay rate ETA (e.g. 1.5,13)")
    a("--timestep-target", metavar="RHO_T", type=float, default=None, help="ours (docs/dpap.md sec. 7.5): silence "
      "RHO_T (in (0, 1)) of each layer's (neuron, time step) pairs, the least important by paper eq. 8 first, on a "
      "cubic schedule ending where the recovery tail starts; instead of --timestep-pruning; any DPAP pruner")
    a("--batch-size", type=int, default=32)
    a("--lr", type=float, default=5e-3, help="Adam learning rate at the start, cosine-annealed to 0 (default 5e-3: "
      "the digits MLP, dense and pruned, is 0.3-0.8 points more accurate than at 2e-3, benchmarks/README.md)")
    defaults = "; ".join(f"{name}: {FAMILIES.get(name).default_pruning.describe()}" for name in FAMILIES.names())
    a("--pruner", default=None, choices=PRUNERS.names(), help="dpap (the paper's rule), dpap-magnitude (DPAP's neuron rule, "
      "synapses by global magnitude to --target-sparsity of the dense count; docs/dpap.md sec. 6.9), dpap-synops (the "
      "same, synapses ranked by |w| over the fourth root of their layer's synaptic operations per synapse; sec. "
      "6.10), magnitude "
      "(gradual global L1 to --target-sparsity) or dense. Default: the model family's (" + defaults + "; your own "
      "networks: dpap; docs/dpap.md sec. 6.12), and dpap with --fit or --budget-cores or under 20 epochs")
    a("--no-prune", action="store_true", help="train dense (baseline): --pruner dense")
    a("--target-sparsity", type=float, default=None, help="final sparsity of the hidden synapses, a fraction of the "
      "dense count, for --pruner magnitude, dpap-magnitude and dpap-synops (default: the model family's, 0.92 for "
      "snn-mlp, else 0.8)")
    a("--dpap-preset", default=None, help="DPAP constants: mnist-snn (default for SNNs: the authors' MNIST SNN "
      "script's), deploy-snn (ours: mnist-snn with unit() over [P0, P97]), mnist-ann (ANNs), cifar-snn (the "
      "BrainCog CIFAR-10 constants), nmnist-snn or dvs-snn (the authors' event-data scripts)")
    a("--dpap-schedule", default=None, choices=("fixed", "run-length"), help="run-length (default): the "
      "preset's e0, rho and R init compressed from its own run length to --epochs, with no pruning in the last "
      "quarter (docs/dpap.md sec. 11.5), for runs of 20 epochs or more; fixed (default below 20 epochs): as the preset wrote them")
    a("--dpap-normalise", default=None, choices=("alive", "all"), help="the elements DPAP's unit() scales "
      "over: alive (survivors only) or all (removed ones included, the authors' code); default: the preset's")
    a("--dpap-percentiles", default=None, metavar="LO,HI", help="the percentiles unit() scales between "
      "(docs/dpap.md sec. 5.1); default: the preset's (0,75 in the CIFAR and MNIST code)")
    a("--dpap-synapse-score", default=None, choices=("bcm", "bcm-weight", "weight"), help="what ranks synapses: bcm (the "
      "paper's BCM matrix), bcm-weight (ours: unit(M) * |w|) or weight (ours: |w|), docs/dpap.md sec. 6.7; "
      "default: the preset's")
    a("--synops-penalty", type=float, default=0.0, metavar="LAMBDA", help="SNNs: add LAMBDA * (synaptic operations "
      "per sample) / (dense synapses) to the loss, so training reaches its accuracy with fewer spikes into the surviving "
      "synapses (ours, beyond the paper; docs/dpap.md sec. 6.8); default 0 (off)")
    a("--synops-cost-power", type=float, default=None, metavar="P", help="--pruner dpap-synops: rank synapses by "
      "|w| / c ** P, c their layer's synaptic operations per synapse; 0 is magnitude ranking, larger P moves more "
      "of the synapse budget off the busiest layers (docs/dpap.md sec. 6.10; default 0.25)")
    a("--regrow", type=float, default=None, metavar="FRACTION", help="--pruner magnitude, dpap-magnitude or "
      "dpap-synops: after each pruning epoch, exchange this fraction of the live synapses (decaying on a cosine to 0 "
      "at the recovery tail): the lowest-ranked dropped, as many regrown where the gradient's running mean is "
      "largest (ours, after RigL and sparse momentum; docs/dpap.md sec. 6.11); default: the model family's with its "
      "default pruner (0.3 for snn-mlp), else 0 (off)")
    a("--device", default="cpu", help="training and the torch emulator engine: cpu (default), cuda, cuda:N or auto")
    a("--max-test", type=int, default=None, help="simulate only the first N test samples")
    a("--require-fit", action="store_true", help="exit with 3 when the network does not fit the profile")
    a("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr is not a terminal)")
    a("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
      help="log messages on stderr from this level up (default warning; info: each stage)")
    a("--debug", action="store_true", help="show tracebacks")
    return p


def run(args: argparse.Namespace, started: Optional[float] = None) -> int:
    """Run ``dpap-export`` with parsed options: the pipeline, or ``--check-only``'s mapping.
    ``started``: ``time.perf_counter()`` at the CLI's start (``report.json`` ``timing_s.total`` counts from it)."""
    from dpap_deploy.pipeline import RunConfig, run_pipeline

    if args.check_only:
        from dpap_deploy.hardware_profiles import load_profile

        if not args.from_dir:
            raise DpapError("--check-only needs --from DIR (the run whose exported network to check)")
        profile = load_profile(args.profile)
        return check(args.from_dir, profile.with_chips(args.chips) if args.chips else profile, pack=not args.no_pack)
    return run_pipeline(RunConfig.from_namespace(args), started=started).exit_code


def load_exported(run_dir: str, **reader_options):
    """The exported network of a run folder (``network.npz``, else ``ir.npz``), or of one
    network file (netx ``.net``, NIR ``.nir``, IR ``.npz``) given in its place, read with
    ``reader_options`` (:func:`~dpap_deploy.readers.read_network_file`).

    Raises:
        IRError: the folder holds neither, the file is not a network of ours (names it), or reader
            options are given for a run folder.
    """
    from dpap_deploy.ir import NetworkIR

    if os.path.isfile(run_dir):  # one network file: .net, .nir or .npz
        from dpap_deploy.readers import read_network_file

        return read_network_file(run_dir, **reader_options)
    if reader_options:
        raise IRError(f"{run_dir!r}: {', '.join(reader_options)} applies to one network file, not a run folder")
    for name in ("network.npz", "ir.npz"):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return NetworkIR.load(path)
    raise IRError(f"{run_dir!r} holds no exported network (network.npz or ir.npz); run dpap-export first")


def check(run_dir: str, profile, pack: bool = True, as_json: bool = False, plot: Optional[str] = None,
          **reader_options) -> int:
    """Map a run's exported network (or one network file, read with ``reader_options``) onto ``profile``,
    print the tables; 0 if it fits, else 3."""
    from dpap_deploy.mapping import map_network
    from dpap_deploy.resources import plot_resources, resources_text

    res = map_network(load_exported(run_dir, **reader_options), profile, pack=pack).to_report()
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
            raise ConfigError(f"--resume continues {first.resume!r} with its own settings (the run.toml of its "
                              f"unfinished run); drop {', '.join('--' + d.replace('_', '-') for d in extra)}")
        from dpap_deploy.runfolder import unfinished_run

        folder = unfinished_run(first.resume)
        if folder is None:
            raise ConfigError(f"--resume {first.resume!r}: no unfinished run there (no run.toml in it or in "
                              f"{first.resume.rstrip('/')}.partial), so no dpap-export run to continue")
        path = os.path.join(folder, "run.toml")
        args = parse_with_config(build_parser(), [], path)
        args.out, args.resume, args.force = first.resume, first.resume, True
        args.quiet, args.debug, args.log_level = first.quiet, first.debug, first.log_level
        return args
    return parse_with_config(build_parser(), argv, first.config) if first.config else first


def main(argv: Optional[List[str]] = None) -> int:
    started = time.perf_counter()
    first = build_parser().parse_args(argv)  # argparse errors (exit 2) and --debug before anything else
    logging.basicConfig(level=getattr(logging, first.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    def go():
        args = parse_args(argv)
        logging.getLogger().setLevel(getattr(logging, args.log_level.upper()))
        return run(args, started)

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
    p.add_argument("--skip-input-neurons", action="store_true",
                   help="netx file: drop an input layer's neurons as lava-dl's Network(skip_layers=1) does "
                        "(default: refuse such a file; lava-dl netx cannot run it)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)

    def go():
        from dpap_deploy.hardware_profiles import load_profile

        profile = load_profile(args.profile)
        if args.chips is not None:
            profile = profile.with_chips(args.chips)
        options = {"skip_input_neurons": True} if args.skip_input_neurons else {}
        return check(args.run_dir, profile, pack=not args.no_pack, as_json=args.json, plot=args.plot, **options)

    return _guarded("dpap-report", args, go)


if __name__ == "__main__":
    sys.exit(main())
