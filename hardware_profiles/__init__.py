"""Hardware profiles (installed as ``dpap_deploy.hardware_profiles``).

A profile is a TOML file, one per target chip, each figure with its source in a comment
or marked ``estimate``. :func:`load_profile` takes a bundled name (``loihi2``) or a path
to a user's file and returns a frozen, validated :class:`Profile`; code never hard-codes
a chip figure.
"""
from __future__ import annotations

import math
import os
from dataclasses import MISSING, dataclass, fields, replace
from typing import Dict, List, Union

from dpap_deploy.errors import ProfileError

HERE = os.path.dirname(os.path.abspath(__file__))


Limit = Union[int, float]  # a positive integer, or math.inf ("inf" in TOML) for no limit


@dataclass(frozen=True)
class ChipLimits:
    """Per chip: neuro cores, neurons, synapses; ``chips`` on the board.

    ``max_inputs``/``max_outputs``/``max_hidden``: input channels, output neurons and hidden
    neurons the chip takes (e.g. Xylo Audio 2: 16, 8 and 1000); ``inf`` where there is no such limit.
    """

    cores: Limit
    neurons: Limit
    synapses: Limit
    chips: int
    max_inputs: Limit = math.inf
    max_outputs: Limit = math.inf
    max_hidden: Limit = math.inf


@dataclass(frozen=True)
class CoreLimits:
    """Per neuro core: neurons (compartments), input/output axons, synaptic memory (bits);
    per neuron: ``max_fan_in`` (synapses in) and ``max_fan_out`` (synapses out), ``inf`` = none."""

    neurons: Limit
    input_axons: Limit
    output_axons: Limit
    synaptic_memory_bits: Limit
    max_fan_in: Limit = math.inf
    max_fan_out: Limit = math.inf


@dataclass(frozen=True)
class Numerics:
    """Integer ranges: weight bits, weight exponent range, decay and threshold bits, the
    longest synaptic delay in time steps (``max_delay``: the total, counting the one step every synapse
    has, i.e. ``1 +`` an IR layer's ``delay``; 1: no programmable delays) and the bits of a neuron's
    bias mantissa (``bias_bits``, signed; 0: the profile has no figure, so a layer with a bias does not map).

    ``decay`` says how the chip stores a decay in ``decay_bits``: ``"fraction"`` (Loihi: the
    state keeps ``1 - d/4096`` per step, ``d`` an integer), ``"shift"`` (Xylo: it keeps
    ``1 - 2**-k``, ``k`` a bit shift) or ``"linear"`` (TrueNorth: a constant leak, no
    exponential decay at all).
    """

    weight_bits: int
    weight_exp_min: int
    weight_exp_max: int
    decay_bits: int
    threshold_bits: int
    max_delay: Limit = math.inf
    decay: str = "fraction"
    bias_bits: int = 0


@dataclass(frozen=True)
class SynapseCost:
    """nengo-loihi's synaptic-memory cost model (``SynapseConfig.bits_per_axon``).

    ``delay_bits``: bits each synapse of a layer with synaptic delays stores for its delay, beside its
    weight (0: none counted).

    ``conv`` says how a convolution's synapses are stored on a neuro core
    (docs/deployment.md sec. 12, "Conv tiling"): ``"shared"`` (the chip keeps each surviving kernel
    weight once per core and shares it across the core's neurons: Loihi 1's weight sharing as
    NxTF uses it, assumed for Loihi 2) or ``"unrolled"`` (one synapse per (output neuron, input
    neuron) pair, costed like a fully connected layer; the default). Any other value:
    :class:`ProfileError` naming the file and ``synapse_cost.conv``.
    """

    group_size: int
    group_header_bits: int
    word_bits: int
    index_bits: int
    conv: str = "unrolled"
    delay_bits: int = 0


@dataclass(frozen=True)
class Profile:
    """A validated hardware profile.

    Attributes:
        name, description: identification; ``source`` is the file it came from.
        chip, core, numerics, synapse_cost: the sections of the TOML file.
    """

    name: str
    description: str
    chip: ChipLimits
    core: CoreLimits
    numerics: Numerics
    synapse_cost: SynapseCost
    source: str = ""

    @property
    def cores_available(self) -> Limit:
        """Neuro cores on the board: ``chip.cores * chip.chips`` (``inf`` for a simulator)."""
        return self.chip.cores * self.chip.chips

    def with_chips(self, chips: int) -> "Profile":
        """The same profile on a board of ``chips`` chips (``--chips N``).

        Raises:
            ProfileError: ``chips`` < 1.
        """
        if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
            raise ProfileError(f"--chips must be a positive integer, got {chips!r}")
        return replace(self, chip=replace(self.chip, chips=chips))

    def with_cores(self, cores: int) -> "Profile":
        """The same profile limited to ``cores`` neuro cores in all (``--budget-cores N``).

        Raises:
            ProfileError: ``cores`` < 1 or more than the board has.
        """
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise ProfileError(f"--budget-cores must be a positive integer, got {cores!r}")
        if cores > self.cores_available:
            raise ProfileError(f"--budget-cores {cores}: {self.name} has only {self.cores_available} cores")
        return replace(self, chip=replace(self.chip, cores=cores, chips=1), name=f"{self.name} ({cores} cores)")


_SECTIONS = {"chip": ChipLimits, "core": CoreLimits, "numerics": Numerics, "synapse_cost": SynapseCost}
_SIGNED = {("numerics", "weight_exp_min"), ("numerics", "weight_exp_max")}
_CHOICES = {("numerics", "decay"): ("fraction", "shift", "linear"),
            ("synapse_cost", "conv"): ("shared", "unrolled")}
_ZERO_OK = {("synapse_cost", "index_bits"), ("synapse_cost", "group_header_bits"), ("synapse_cost", "delay_bits"),
            ("numerics", "bias_bits")}
_LIMITS = {(k, f.name) for k, cls in (("chip", ChipLimits), ("core", CoreLimits)) for f in fields(cls)
           if f.name != "chips"} | {("numerics", "max_delay")}


def bundled_profiles() -> List[str]:
    """Names of the profiles shipped in this package."""
    return sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".toml"))


def _section(path: str, data: dict, key: str, cls) -> object:
    if key not in data:
        raise ProfileError(f"{path}: missing section [{key}]")
    sec = data[key]
    if not isinstance(sec, dict):
        raise ProfileError(f"{path}: [{key}] must be a table, got {type(sec).__name__}")
    names = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING]
    unknown = sorted(set(sec) - set(names))
    if unknown:
        raise ProfileError(f"{path}: unknown key {key}.{unknown[0]}; [{key}] takes {', '.join(names)}")
    values: Dict[str, Limit] = {}
    for name in names:
        if name not in sec:
            if name in required:
                expected = "integer or inf" if (key, name) in _LIMITS else "integer"
                raise ProfileError(f"{path}: missing key {key}.{name} (expected {expected})")
            continue
        v = sec[name]
        if (key, name) in _CHOICES:
            if v not in _CHOICES[(key, name)]:
                raise ProfileError(f"{path}: {key}.{name} = {v!r}; expected one of "
                                   f"{', '.join(repr(c) for c in _CHOICES[(key, name)])}")
            values[name] = v
            continue
        if (key, name) in _LIMITS and isinstance(v, float) and math.isinf(v) and v > 0:
            values[name] = math.inf
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            expected = "integer or inf" if (key, name) in _LIMITS else "integer"
            raise ProfileError(f"{path}: {key}.{name} = {v!r} has type {type(v).__name__}; expected {expected}")
        if (key, name) not in _SIGNED and (v < 0 or (v == 0 and (key, name) not in _ZERO_OK)):
            bound = ">= 0" if (key, name) in _ZERO_OK else ">= 1"
            raise ProfileError(f"{path}: {key}.{name} = {v} must be {'non-negative' if bound == '>= 0' else 'positive'}"
                               f" ({bound})")
        values[name] = v
    return cls(**values)


def _merge(base: dict, over: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def parse_profile(path: str, text: str, _seen: tuple = ()) -> Profile:
    """Validate a profile's TOML text (``path`` is only used in messages and to find a
    relative ``extends``).

    A profile may start from another with ``extends = "loihi2"`` (a bundled name or a path
    relative to the file) and override single keys, e.g. a board of 8 chips; the base may
    itself extend another, to any depth.

    Raises:
        ProfileError: malformed TOML, a missing/unknown section or key, a wrong type,
            a non-positive limit, an empty exponent range or an ``extends`` loop; the message
            names file and key.
    """
    data = _resolved(path, text, _seen)
    return _validated(path, data)


def _resolved(path: str, text: str, seen: tuple) -> dict:
    """The profile's TOML table with its ``extends`` chain merged in (the base first); every
    base in the chain must be a valid profile on its own."""
    import tomli

    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    known = {"name", "description", "extends", *_SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{path}: unknown key {unknown[0]!r}; a profile has {', '.join(sorted(known))}")
    if "extends" not in data:
        return data
    base_name = data.pop("extends")
    if not isinstance(base_name, str) or not base_name:
        raise ProfileError(f"{path}: extends = {base_name!r}; expected a profile name or path")
    written = base_name
    if base_name.endswith(".toml") and not os.path.isabs(base_name):
        base_name = os.path.join(os.path.dirname(path), base_name)
    base_path = _resolve(base_name)
    here = os.path.realpath(path)  # "./a.toml" and "a.toml" are one file: compare real paths
    if os.path.realpath(base_path) in seen + (here,):
        raise ProfileError(f"{path}: extends {written!r} makes a loop")
    base = _resolved(base_path, _read(base_path), seen + (here,))
    _validated(base_path, base)  # the base must be valid on its own
    return _merge(base, data)


def _validated(path: str, data: dict) -> Profile:
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise ProfileError(f"{path}: missing key {key!r} (expected a non-empty string)")
    secs = {k: _section(path, data, k, cls) for k, cls in _SECTIONS.items()}
    n = secs["numerics"]
    if n.weight_exp_min > n.weight_exp_max:
        raise ProfileError(f"{path}: numerics.weight_exp_min {n.weight_exp_min} > weight_exp_max {n.weight_exp_max}")
    return Profile(name=data["name"], description=data["description"], source=path, **secs)


def _resolve(name_or_path: str) -> str:
    if os.sep in name_or_path or name_or_path.endswith(".toml"):
        if not os.path.isfile(name_or_path):
            raise ProfileError(f"profile file {name_or_path!r} does not exist")
        return name_or_path
    path = os.path.join(HERE, name_or_path + ".toml")
    if not os.path.isfile(path):
        raise ProfileError(
            f"unknown profile {name_or_path!r}; bundled profiles: {', '.join(bundled_profiles())} "
            "(or pass a path to your own .toml)"
        )
    return path


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc})") from None


def load_profile(name_or_path: str) -> Profile:
    """Load a bundled profile by name (``loihi2``) or a user's TOML file by path.

    Raises:
        ProfileError: unknown name, unreadable file, or an invalid profile.
    """
    path = _resolve(name_or_path)
    return parse_profile(path, _read(path))
