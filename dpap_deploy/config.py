"""Runs as files: ``--config run.toml`` sets any ``dpap-export`` option, flags override it, and
the effective configuration is saved as ``DIR/run.toml`` so the run can be repeated
(``dpap-export --config DIR/run.toml``) or continued (``dpap-export --resume DIR``).

A config file is flat TOML whose keys are the long option names, with ``-`` or ``_``::

    target = "loihi-sim"
    profile = "loihi1"
    hidden = "256,128"
    epochs = 30
    time-steps = 16
    lr = 0.01
    budget-cores = 2

Reading uses ``tomli`` (Python 3.10 has no ``tomllib``), writing ``tomli-w``.
"""
from __future__ import annotations

import argparse
from typing import Dict, Iterable, List, Optional

from dpap_deploy.errors import ConfigError
from dpap_deploy.fileio import atomic_path


#: options that describe how to run, not what: never saved in ``run.toml``
NOT_SAVED = ("config", "resume", "force", "quiet", "debug", "log_level", "out")


def _options(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """``{long option name without dashes: action}``, e.g. ``"time-steps"``, ``"from"``."""
    out = {}
    for a in parser._actions:
        longs = [o for o in a.option_strings if o.startswith("--")]
        if longs and a.dest != "help":
            out[longs[0][2:]] = a
    return out


def read_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """The options set in a TOML file, as ``{dest: value}``, checked against ``parser``.

    Raises:
        ConfigError: missing or unreadable file, TOML syntax (with line and column), a table
            where a value belongs, an unknown key, or a value of the wrong type or not one of
            the option's choices: each names the file and the key.
    """
    import tomli

    try:
        with open(path, "rb") as f:
            data = tomli.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text: {exc.reason})") from None
    options = {k: a for k, a in _options(parser).items() if k not in ("config", "resume")}
    out = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name not in options:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(options))}")
        out[options[name].dest] = _checked(path, key, value, options[name])
    return out


def _checked(path: str, key: str, value, action: argparse.Action):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{path}: {key} must be a single value, got a {type(value).__name__}")
    kind = action.type or str
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{path}: {key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: {key} must be a number, got {value!r}")
        value = float(value)
    if kind is str:
        if isinstance(value, int) and not isinstance(value, bool) and key.replace("_", "-") in ("hidden", "channels"):
            value = str(value)  # hidden = 64 means one layer of 64
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key} must be a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{path}: {key} = {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def explicit_options(argv: Iterable[str], parser: argparse.ArgumentParser) -> List[str]:
    """The ``dest`` of every option written on the command line (``--x`` or ``--x=v``)."""
    by_flag = parser._option_string_actions
    out = []
    for tok in argv:
        flag = tok.split("=", 1)[0]
        if flag.startswith("-") and flag in by_flag:
            out.append(by_flag[flag].dest)
    return out


def parse_with_config(parser: argparse.ArgumentParser, argv: List[str],
                      config_path: Optional[str]) -> argparse.Namespace:
    """Parse ``argv`` with the file's values as defaults: flags on the command line win."""
    if config_path:
        parser.set_defaults(**read_config(config_path, parser))
    return parser.parse_args(argv)


def effective_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """Every option that shapes the run (not ``--out``, ``--force``, ``--quiet`` ...), None left out
    (TOML has no null), with the command line's spelling of the keys."""
    out = {}
    for name, action in _options(parser).items():
        if action.dest in NOT_SAVED:
            continue
        value = getattr(args, action.dest, None)
        if value is not None:
            out[name] = value
    return out


def write_config(path: str, config: dict) -> None:
    """Write ``config`` as TOML, atomically, with a header saying how to reuse it."""
    import tomli_w

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("# the effective configuration of this run (dpap-export --config this-file repeats it;\n"
                    "# dpap-export --resume <folder> continues it)\n")
            f.write(tomli_w.dumps(config))
