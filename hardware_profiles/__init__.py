"""Hardware profiles (installed as ``dpap_deploy.hardware_profiles``).

A profile is a TOML file, one per target chip, each figure with its source in a comment
or marked ``estimate``. :func:`load_profile` takes a bundled name (``loihi2``) or a path
to a user's file and returns a frozen, validated :class:`Profile`; code never hard-codes
a chip figure.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Dict, List

from dpap_deploy.errors import ProfileError

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class ChipLimits:
    """Per chip: neuro cores, neurons, synapses; ``chips`` on the board."""

    cores: int
    neurons: int
    synapses: int
    chips: int


@dataclass(frozen=True)
class CoreLimits:
    """Per neuro core: neurons (compartments), input/output axons, synaptic memory (bits)."""

    neurons: int
    input_axons: int
    output_axons: int
    synaptic_memory_bits: int


@dataclass(frozen=True)
class Numerics:
    """Integer ranges: weight bits, weight exponent range, decay and threshold bits."""

    weight_bits: int
    weight_exp_min: int
    weight_exp_max: int
    decay_bits: int
    threshold_bits: int


@dataclass(frozen=True)
class SynapseCost:
    """nengo-loihi's synaptic-memory cost model (``SynapseConfig.bits_per_axon``)."""

    group_size: int
    group_header_bits: int
    word_bits: int
    index_bits: int


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
    def cores_available(self) -> int:
        return self.chip.cores * self.chip.chips


_SECTIONS = {"chip": ChipLimits, "core": CoreLimits, "numerics": Numerics, "synapse_cost": SynapseCost}
_SIGNED = {("numerics", "weight_exp_min"), ("numerics", "weight_exp_max")}


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
    unknown = sorted(set(sec) - set(names))
    if unknown:
        raise ProfileError(f"{path}: unknown key {key}.{unknown[0]}; [{key}] takes {', '.join(names)}")
    values: Dict[str, int] = {}
    for name in names:
        if name not in sec:
            raise ProfileError(f"{path}: missing key {key}.{name} (expected integer)")
        v = sec[name]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProfileError(f"{path}: {key}.{name} = {v!r} has type {type(v).__name__}; expected integer")
        if (key, name) not in _SIGNED and v <= 0 and not (key == "synapse_cost" and name == "index_bits" and v == 0):
            raise ProfileError(f"{path}: {key}.{name} = {v} must be positive")
        values[name] = v
    return cls(**values)


def parse_profile(path: str, text: str) -> Profile:
    """Validate a profile's TOML text (``path`` is only used in messages).

    Raises:
        ProfileError: malformed TOML, a missing/unknown section or key, a wrong type,
            a non-positive limit or an empty exponent range; the message names file and key.
    """
    import tomli

    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    known = {"name", "description", *_SECTIONS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{path}: unknown key {unknown[0]!r}; a profile has {', '.join(sorted(known))}")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise ProfileError(f"{path}: missing key {key!r} (expected a non-empty string)")
    secs = {k: _section(path, data, k, cls) for k, cls in _SECTIONS.items()}
    n = secs["numerics"]
    if n.weight_exp_min > n.weight_exp_max:
        raise ProfileError(f"{path}: numerics.weight_exp_min {n.weight_exp_min} > weight_exp_max {n.weight_exp_max}")
    return Profile(name=data["name"], description=data["description"], source=path, **secs)


def load_profile(name_or_path: str) -> Profile:
    """Load a bundled profile by name (``loihi2``) or a user's TOML file by path.

    Raises:
        ProfileError: unknown name, unreadable file, or an invalid profile.
    """
    if os.sep in name_or_path or name_or_path.endswith(".toml"):
        path = name_or_path
        if not os.path.isfile(path):
            raise ProfileError(f"profile file {path!r} does not exist")
    else:
        path = os.path.join(HERE, name_or_path + ".toml")
        if not os.path.isfile(path):
            raise ProfileError(
                f"unknown profile {name_or_path!r}; bundled profiles: {', '.join(bundled_profiles())} "
                "(or pass a path to your own .toml)"
            )
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc})") from None
    return parse_profile(path, text)
