"""Model families, registered by name (``--model NAME``), and a user's own network (``--model PATH.py:FUNCTION``).

A family knows which data kinds it takes, its default data source, DPAP preset and pruning
(:class:`PruningDefaults`), and builds a :class:`~dpap_deploy.train.models.SequentialNet` for a data set:

* ``snn-mlp``: Norse LIF MLP, 64-256-128-10 on the digits by default; spike trains and frames
  are flattened per step; static features rate- or current-encoded;
* ``snn-cnn``: conv3x3-LIF-avgpool2 blocks then fully connected LIF layers, on event frames;
* ``snn-2c2f``: the paper's 15C3-AP2-40C3-AP2-300FC-10FC for event data;
* ``ann-mlp``: PyTorch ReLU MLP (DPAP's ANN variant, paper eqs. 12-13), static features, to ONNX;
* ``PATH.py:FUNCTION``: ``FUNCTION(input_shape, n_classes)`` returns a Norse ``SequentialState``
  (or ``torch.nn.Sequential``) that ``train/user_model.py`` takes apart into the same chain.

Adding a family is one class registered in :data:`FAMILIES`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from dpap_deploy.data import Dataset
from dpap_deploy.errors import DataError, DpapError
from dpap_deploy.registry import Registry
from dpap_deploy.train import models as M


@dataclass(frozen=True)
class BuildOptions:
    """What a run says about the network to build.

    Attributes:
        hidden: hidden fully connected sizes (None: the family's default).
        channels: conv channels per block (None: the family's default).
        encoding: ``rate`` or ``current`` for static data into a spiking network.
        seed: seeds the weights.
    """

    hidden: Optional[List[int]] = None
    channels: Optional[List[int]] = None
    encoding: str = "rate"
    seed: int = 0


@dataclass(frozen=True)
class PruningDefaults:
    """How a family's runs prune when ``--pruner`` is not given (docs/dpap.md sec. 6.12).

    Attributes:
        pruner: the registered pruner name (``dpap``, ``dpap-magnitude``, ...).
        target_sparsity: the final sparsity of the hidden synapses, a fraction of the dense count
            (``--target-sparsity``; used by the pruners that prune to a target).
        regrow: ``--regrow FRACTION`` with this pruner (0: none).
    """

    pruner: str = "dpap"
    target_sparsity: float = 0.8
    regrow: float = 0.0

    def describe(self) -> str:
        """The equivalent options, e.g. ``dpap-magnitude --target-sparsity 0.92 --regrow 0.3``."""
        if self.pruner == "dpap":
            return "dpap"
        return f"{self.pruner} --target-sparsity {self.target_sparsity:g}" + (
            f" --regrow {self.regrow:g}" if self.regrow else "")


class ModelFamily:
    """Base of the families.

    Attributes:
        name: the registered name.
        spiking: builds SNNs (False: ANNs, which go to the ``onnx`` target).
        takes: the data kinds it trains on (``static``, ``spikes``, ``frames``).
        default_data: the ``--data`` source used when none is given.
        default_preset: the DPAP preset used when ``--dpap-preset`` is not given.
        default_pruning: the pruner, target sparsity and regrowth used when ``--pruner`` is not
            given: the paper's rule (``dpap``) unless the family's benchmark measured a pruner that
            beats magnitude pruning (``benchmarks/README.md``, "Pruners against what a chip pays for").
    """

    name = "?"
    spiking = True
    takes: Tuple[str, ...] = ("static", "spikes", "frames")
    default_data = "digits"
    default_preset = "mnist-snn"
    default_pruning = PruningDefaults()

    def check_data(self, ds: Dataset) -> None:
        """Raise :class:`DataError` unless this family takes ``ds``'s kind."""
        if ds.kind not in self.takes:
            raise DataError(f"--model {self.name} takes {' or '.join(self.takes)} data; data {ds.name!r} is "
                            f"{ds.kind} {_shape(ds)}")

    def build(self, ds: Dataset, opts: BuildOptions) -> M.SequentialNet:
        raise NotImplementedError


def _shape(ds: Dataset) -> str:
    return "(N, " + ", ".join(["T"] * (ds.kind != "static") + [str(s) for s in ds.sample_shape]) + ")"


#: every built-in model family by name
FAMILIES: Registry[ModelFamily] = Registry("model family")


def register(cls):
    FAMILIES.register(cls.name, cls(), help=(cls.__doc__ or "").strip().split("\n")[0])
    return cls


@register
class SNNMLP(ModelFamily):
    """Norse LIF MLP (default 256,128 hidden); frames and spike trains flattened per step."""

    name = "snn-mlp"
    #: measured on digits, 3 seeds (benchmarks/README.md, "Fourth round: regrowth"): 97.50 % with
    #: 20,186 synaptic operations per sample, against magnitude pruning's 97.13 % with 23,210
    default_pruning = PruningDefaults("dpap-magnitude", 0.92, 0.3)

    def build(self, ds: Dataset, opts: BuildOptions) -> M.SequentialNet:
        torch.manual_seed(opts.seed)
        hidden = opts.hidden or [256, 128]
        return M.SpikingMLP([ds.n_features, *hidden, ds.n_classes], in_shape=ds.sample_shape,
                            input_current=ds.kind == "static" and opts.encoding == "current")


@register
class SNNCNN(ModelFamily):
    """Norse conv SNN: conv3x3-LIF-avgpool2 blocks (default 8,16 channels), then FC (default 64)."""

    name = "snn-cnn"
    takes = ("frames",)
    default_data = "event-digits"
    channels, hidden = [8, 16], [64]
    #: measured on the 2C2F (event-digits, 3 seeds; benchmarks/README.md, "Pruners against what a
    #: chip pays for"): 98.80 % on 5.7 cores of loihi2 with 1.88 M synaptic operations per sample,
    #: against magnitude pruning's 98.61 % on 10 cores with 2.83 M; regrowth does not help there
    default_pruning = PruningDefaults("dpap-magnitude", 0.8, 0.0)

    def build(self, ds: Dataset, opts: BuildOptions) -> M.SequentialNet:
        torch.manual_seed(opts.seed)
        return M.SpikingCNN(ds.sample_shape, opts.channels or self.channels, opts.hidden or self.hidden, ds.n_classes)


@register
class SNN2C2F(SNNCNN):
    """The paper's 15C3-AP2-40C3-AP2-300FC-10FC for event data."""

    name = "snn-2c2f"
    channels, hidden = [15, 40], [300]


@register
class ANNMLP(ModelFamily):
    """PyTorch ReLU MLP (DPAP's ANN variant) on static features; target onnx."""

    name = "ann-mlp"
    spiking = False
    takes = ("static",)
    default_preset = "mnist-ann"

    def build(self, ds: Dataset, opts: BuildOptions) -> M.SequentialNet:
        torch.manual_seed(opts.seed)
        return M.ANNMLP([ds.n_features, *(opts.hidden or [256, 128]), ds.n_classes])


@dataclass
class UserFamily(ModelFamily):
    """A user's own network from ``PATH.py:FUNCTION`` (``train/user_model.py``)."""

    spec: str = ""
    takes: Tuple[str, ...] = field(default=("static", "spikes", "frames"))

    def __post_init__(self):
        from dpap_deploy.train.user_model import parse_spec

        self.path, self.function = parse_spec(self.spec)
        self.name = self.spec

    def build(self, ds: Dataset, opts: BuildOptions) -> M.SequentialNet:
        from dpap_deploy.train.user_model import load_user_model

        torch.manual_seed(opts.seed)
        net = load_user_model(self.spec, ds.sample_shape, ds.n_classes,
                              input_current=ds.kind == "static" and opts.encoding == "current")
        self.spiking = net.spiking
        return net


def get_family(spec: str) -> ModelFamily:
    """The family ``--model`` names: a registered name, or ``PATH.py:FUNCTION`` (a user's network).

    Raises:
        UnknownNameError: neither (lists the families).
        ModelError: a malformed ``PATH.py:FUNCTION``.
    """
    if ".py" in spec:
        return UserFamily(spec=spec)
    try:
        return FAMILIES.get(spec)
    except DpapError as exc:
        raise type(exc)(f"{exc}; or PATH.py:FUNCTION for your own network") from None
