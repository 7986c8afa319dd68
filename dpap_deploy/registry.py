"""Units registered by name: data sources, model families, pruners, export targets, file readers.

One small class serves every kind of unit. A unit registers itself where it is defined::

    from dpap_deploy.data import SOURCES

    @SOURCES.register("wine", help="scikit-learn's wine recognition data (13 features, 3 classes)")
    def wine(arg, request): ...

and is looked up by the name a user typed (``--data wine``); an unknown name is an error that
lists the known ones. Built-in units live in their own modules, imported the first time a
registry is asked for a name (``loader``), so importing the package stays cheap and adding a
unit is one new file plus its registration (and one line in the loader).
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, List, Optional, Type, TypeVar

from dpap_deploy.errors import DpapError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named units of one kind.

    Args:
        kind: what a unit is, for messages (``"data source"``, ``"model family"`` ...).
        loader: imports the modules that register the built-in units; called once, before the
            first lookup.
        error: the :class:`~dpap_deploy.errors.DpapError` subclass an unknown name raises.
    """

    def __init__(self, kind: str, loader: Optional[Callable[[], None]] = None,
                 error: Type[DpapError] = UnknownNameError):
        self.kind = kind
        self._loader = loader
        self._loaded = loader is None
        self._error = error
        self._units: Dict[str, T] = {}
        self._help: Dict[str, str] = {}

    def register(self, name: str, unit: Optional[T] = None, help: str = ""):
        """Register ``unit`` under ``name``; without ``unit``, a decorator that registers what it decorates.

        Raises:
            ValueError: ``name`` is already taken (two units must not shadow each other).
        """
        def add(u: T) -> T:
            if name in self._units:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._units[name] = u
            self._help[name] = help or (getattr(u, "__doc__", "") or "").strip().split("\n")[0]
            return u

        return add(unit) if unit is not None else add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._loader()

    def get(self, name: str) -> T:
        """The unit registered as ``name``.

        Raises:
            UnknownNameError (or the registry's ``error``): no such unit; the message lists the known names.
        """
        self._load()
        try:
            return self._units[name]
        except KeyError:
            raise self._error(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}") from None

    def names(self) -> List[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self._units)

    def help(self, name: str) -> str:
        """The one-line description a unit was registered with (its docstring's first line by default)."""
        self._load()
        return self._help.get(name, "")

    def describe(self) -> str:
        """``name: help`` for every unit, for ``--help`` texts."""
        return "; ".join(f"{n}: {self.help(n)}" if self.help(n) else n for n in self.names())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._units

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
