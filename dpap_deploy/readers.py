"""Network-file readers, registered by file suffix: a netx ``.net``, a NIR ``.nir``, our IR ``.npz``.

``dpap-report FILE`` (and :func:`read_network_file`) picks the reader by the file's suffix; each
reader returns a :class:`~dpap_deploy.ir.NetworkIR` or raises an error naming the file and the
group, node or key it could not take. Adding a format is one function registered in :data:`READERS`.
"""
from __future__ import annotations

import os
from typing import Callable

from dpap_deploy.errors import NetworkFileError
from dpap_deploy.ir import NetworkIR
from dpap_deploy.registry import Registry


def _load_builtin() -> None:
    from dpap_deploy.export.netx import read_netx
    from dpap_deploy.export.nir_export import read_nir

    READERS.register(".net", read_netx, help="lava-dl netx HDF5 (fixed point)")
    READERS.register(".nir", read_nir, help="NIR graph (float)")
    READERS.register(".npz", NetworkIR.load, help="dpap-deploy IR")


#: network-file readers by suffix
READERS: Registry[Callable[[str], NetworkIR]] = Registry("network file type", loader=_load_builtin,
                                                         error=NetworkFileError)


def read_network_file(path: str, **options) -> NetworkIR:
    """The network in one file, read by the reader of its suffix, with the reader's keyword ``options``
    (e.g. ``skip_input_neurons=True`` for a netx ``.net``, :func:`~dpap_deploy.export.netx.read_netx`).

    Raises:
        NetworkFileError: an unknown suffix (names the file and the suffixes known), or an option the
            file type's reader does not take; IRError (or a subclass) from the readers.
    """
    import inspect

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in READERS:
        raise NetworkFileError(f"{path}: unknown network file type {suffix or '(no suffix)'!r}; "
                               f"expected a run folder or one of {', '.join(READERS.names())}")
    reader = READERS.get(suffix)
    takes = inspect.signature(reader).parameters
    unknown = [k for k in options if k not in takes]
    if unknown:
        raise NetworkFileError(f"{path}: option {unknown[0]!r} does not apply to a {suffix} file")
    return reader(path, **options)
