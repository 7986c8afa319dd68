"""Tensors and plain data in one file that loading can never run code from.

``torch.save``/``torch.load`` pickle: unpickling a shared ``model.pt`` or ``checkpoint.pt`` can
run any command, and ``torch.load(weights_only=True)`` before torch 2.6 is not a fix
(CVE-2025-32434; we are pinned to torch 2.3 by lava-dl 0.6.0). This module writes a *tree* (a
nested structure of plain data and tensors) as one safetensors file
(https://github.com/huggingface/safetensors): the tensors are the file's tensors, and the
structure with every non-tensor value is one JSON string in the safetensors header metadata.
Loading parses that JSON and reads raw tensor bytes; nothing is ever unpickled.

File layout (a standard safetensors file, readable by any safetensors reader)::

    8 bytes   little-endian u64 N, the header's length
    N bytes   JSON header: {"__metadata__": {"dpap_deploy": "<JSON document>"},
                            "<tensor key>": {"dtype": ..., "shape": [...], "data_offsets": [a, b]}, ...}
    rest      the tensors' raw bytes

    <JSON document> = {"format": fmt, "version": version, "tree": <node>}

A ``<node>`` is JSON ``null``/``true``/``false``, an integer, a finite number, a string, a list
of nodes (a Python ``list``), or an object with one ``$``-key:

    ``{"$tuple": [node, ...]}``             a tuple
    ``{"$dict": [[key, node], ...]}``       a dict, in order; key a JSON string or integer
    ``{"$odict": [[key, node], ...]}``      a ``collections.OrderedDict`` (state dicts)
    ``{"$float": "nan" | "inf" | "-inf"}``  a non-finite float
    ``{"$tensor": "<tensor key>"}``         a torch tensor
    ``{"$ndarray": "<tensor key>"}``        a numpy array
    ``{"$npscalar": "<tensor key>"}``       a numpy scalar (stored as a 0-dim tensor)

Tensor keys are the value's path in the tree (``state_dict/layers.0.weight``), made unique with a
``#n`` suffix where two paths print alike (an int key 1 and a str key "1").

What comes back: dicts, OrderedDicts, lists and tuples as saved (dict keys ``str`` or ``int`` as
saved); ``str``/``int``/``float``/``bool``/``None`` as saved (subclasses such as ``IntEnum`` or a
``NamedTuple`` come back as their base type); torch tensors as contiguous CPU tensors of the
same dtype and shape without gradient (a tensor saved twice comes back as two tensors);
**numpy arrays as numpy arrays** and numpy scalars as numpy scalars of the same dtype (native
byte order). Tensor dtypes: bool, uint8, int8, int16, int32, int64, float16, bfloat16, float32,
float64 (numpy: the same less bfloat16).
"""
from __future__ import annotations

import collections
import json
import math
import struct
import zipfile
from typing import Any, Dict, List, Type

import numpy as np
import torch

from dpap_deploy.errors import CheckpointError, DpapError
from dpap_deploy.fileio import atomic_path

#: the safetensors metadata key holding our JSON document
META_KEY = "dpap_deploy"
#: safetensors' own limit on the header's length (bytes)
MAX_HEADER = 100_000_000

TORCH_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
                torch.bfloat16, torch.float32, torch.float64)
NUMPY_DTYPES = tuple(np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16,
                                           np.float32, np.float64))
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# -- saving ------------------------------------------------------------------------------------
def _where(path: List[Any]) -> str:
    """``tree['optimizer']['state'][0]``: a path inside the tree, for error messages."""
    return "tree" + "".join(f"[{p!r}]" for p in path)


class _Encoder:
    def __init__(self):
        self.tensors: Dict[str, torch.Tensor] = {}

    def _key(self, path: List[Any]) -> str:
        base = "/".join(str(p) for p in path) or "tensor"
        key, n = base, 1
        while key in self.tensors:
            key, n = f"{base}#{n}", n + 1
        return key

    def _store(self, t: torch.Tensor, path: List[Any]) -> str:
        key = self._key(path)
        # a contiguous copy of its own: safetensors refuses tensors that share memory
        self.tensors[key] = t.detach().to("cpu").contiguous().clone()
        return key

    def encode(self, obj: Any, path: List[Any]) -> Any:
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.dtype not in TORCH_DTYPES:
                raise TypeError(f"{_where(path)}: cannot store a {obj.layout} tensor of dtype {obj.dtype} (only strided "
                                f"tensors of dtypes {', '.join(str(d).replace('torch.', '') for d in TORCH_DTYPES)})")
            return {"$tensor": self._store(obj, path)}
        if isinstance(obj, (np.ndarray, np.generic)):
            arr = np.asarray(obj)
            if arr.dtype.kind in "biuf" and not arr.dtype.isnative:
                arr = arr.astype(arr.dtype.newbyteorder("="))
            if arr.dtype not in NUMPY_DTYPES:
                raise TypeError(f"{_where(path)}: cannot store a numpy value of dtype {arr.dtype} "
                                f"(dtypes: {', '.join(str(d) for d in NUMPY_DTYPES)})")
            tag = "$ndarray" if isinstance(obj, np.ndarray) else "$npscalar"
            return {tag: self._store(torch.from_numpy(arr.copy(order="C")), path)}  # copy: keeps 0-dim
        if obj is None or isinstance(obj, (bool, str)):
            return str.__str__(obj) if isinstance(obj, str) else obj  # str.__str__: a str Enum's value
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else {"$float": repr(float(obj))}
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise TypeError(f"{_where(path)}: dict key {k!r} has type {type(k).__name__}; only str and "
                                    "int keys can be stored")
                items.append([str(k) if isinstance(k, str) else int(k), self.encode(v, path + [k])])
            return {"$odict" if isinstance(obj, collections.OrderedDict) else "$dict": items}
        if isinstance(obj, list):
            return [self.encode(v, path + [i]) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"$tuple": [self.encode(v, path + [i]) for i, v in enumerate(obj)]}
        raise TypeError(f"{_where(path)}: cannot store a {type(obj).__module__}.{type(obj).__qualname__} (only dict, "
                        "list, tuple, str, int, float, bool, None, torch tensors and numpy arrays/scalars)")


def save_tree(path: str, tree: Any, fmt: str, version: int) -> None:
    """Write ``tree`` to ``path`` as one safetensors file, atomically (:func:`atomic_path`).

    Args:
        path: the file to write (an earlier file there is replaced only once the new one is complete).
        tree: nested dict (str or int keys) / OrderedDict / list / tuple / str / int / float (NaN and
            infinities too) / bool / None / torch tensor (dtypes in :data:`TORCH_DTYPES`, any shape
            incl. 0-dim and empty, any device) / numpy array or scalar (:data:`NUMPY_DTYPES`).
        fmt: the kind of file (e.g. ``"dpap-deploy-checkpoint"``); :func:`load_tree` checks it.
        version: the layout version of ``fmt``; :func:`load_tree` refuses newer ones.

    Raises:
        TypeError: a value (or dict key) that cannot be stored, naming its path in the tree
            (``tree['optimizer']['state'][0]``); nothing is written then.
        OutputError: the file cannot be written (from :func:`atomic_path`).
    """
    from safetensors.torch import save_file

    enc = _Encoder()
    doc = {"format": str(fmt), "version": int(version), "tree": enc.encode(tree, [])}
    meta = {META_KEY: json.dumps(doc, allow_nan=False, separators=(",", ":"))}
    with atomic_path(path) as tmp:
        save_file(enc.tensors, tmp, metadata=meta)


# -- loading -----------------------------------------------------------------------------------
def _pickle_kind(head: bytes, path: str) -> str:
    """What a pickle-based file is ("a pickle", "a torch.save zip archive"), or "" if it is not one."""
    if head.startswith(b"\x80"):
        return "a pickle"
    if head.startswith(b"PK\x03\x04"):
        try:  # reading the zip's directory unpickles nothing
            with zipfile.ZipFile(path) as z:
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                    return "a torch.save zip archive (pickled data.pkl)"
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            pass
    return ""


def _header(data: bytes):
    """The JSON header of safetensors bytes ``data`` as a dict, or None if ``data`` does not start
    like a safetensors file (length prefix within the file, then a JSON object)."""
    if len(data) < 8:
        return None
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        return None
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


class _Decoder:
    def __init__(self, tensors: Dict[str, torch.Tensor], path: str, error: Type[DpapError]):
        self.tensors, self.path, self.error = tensors, path, error

    def bad(self, what: str) -> DpapError:
        return self.error(f"{self.path}: malformed {META_KEY} metadata ({what})")

    def tensor(self, key: Any, where: str) -> torch.Tensor:
        if not isinstance(key, str):
            raise self.bad(f"{where}: tensor key {key!r} is not a string")
        if key not in self.tensors:
            raise self.error(f"{self.path}: {META_KEY} metadata names tensor {key!r} at {where}, which the file "
                             "does not hold")
        return self.tensors[key]

    def decode(self, node: Any, path: List[Any]) -> Any:
        if node is None or isinstance(node, (bool, str, int)):
            return node
        if isinstance(node, float):
            if not math.isfinite(node):
                raise self.bad(f"{_where(path)}: a bare non-finite number")
            return node
        if isinstance(node, list):
            return [self.decode(v, path + [i]) for i, v in enumerate(node)]
        if not isinstance(node, dict) or len(node) != 1:
            raise self.bad(f"{_where(path)}: expected a value or an object with one $-key, got "
                           f"{json.dumps(node)[:80]}")
        (tag, body), = node.items()
        if tag in ("$dict", "$odict"):
            if not isinstance(body, list):
                raise self.bad(f"{_where(path)}: {tag} holds {type(body).__name__}, not a list of [key, value]")
            out = collections.OrderedDict() if tag == "$odict" else {}
            for item in body:
                if (not isinstance(item, list) or len(item) != 2 or isinstance(item[0], bool)
                        or not isinstance(item[0], (str, int))):
                    raise self.bad(f"{_where(path)}: {tag} item {json.dumps(item)[:80]} is not [str or int key, value]")
                out[item[0]] = self.decode(item[1], path + [item[0]])
            return out
        if tag == "$tuple":
            if not isinstance(body, list):
                raise self.bad(f"{_where(path)}: $tuple holds {type(body).__name__}, not a list")
            return tuple(self.decode(v, path + [i]) for i, v in enumerate(body))
        if tag == "$float":
            if body not in _NONFINITE:
                raise self.bad(f"{_where(path)}: $float {body!r} is not 'nan', 'inf' or '-inf'")
            return _NONFINITE[body]
        if tag == "$tensor":
            return self.tensor(body, _where(path))
        if tag in ("$ndarray", "$npscalar"):
            t = self.tensor(body, _where(path))
            if t.dtype == torch.bfloat16:
                raise self.bad(f"{_where(path)}: numpy has no bfloat16")
            arr = t.numpy()
            if tag == "$npscalar":
                if arr.ndim != 0:
                    raise self.bad(f"{_where(path)}: $npscalar tensor {body!r} has shape {list(arr.shape)}")
                return arr[()]
            return arr
        raise self.bad(f"{_where(path)}: unknown tag {tag!r}")


def load_tree(path: str, fmt: str, max_version: int, error: Type[DpapError] = CheckpointError) -> Any:
    """Read a tree written by :func:`save_tree` (the module docstring says what comes back).
    Never unpickles anything: the file is parsed as safetensors and JSON only.

    Args:
        path: the file.
        fmt: the ``fmt`` it must have been saved with.
        max_version: the newest version of ``fmt`` this code reads.
        error: the error class to raise (a :class:`DpapError` subclass taking one message).

    Raises:
        error: with a one-line message naming ``path`` and what is wrong: the file is missing or
            unreadable; is empty, truncated or not a safetensors file; is pickle-based (a pickle or
            a ``torch.save`` zip: not loaded, since unpickling can run code); is a safetensors file
            without our metadata, of another ``fmt`` or a newer version; its metadata is not valid
            JSON or not a tree as described above; or the metadata names a tensor the file lacks.
    """
    from safetensors.torch import load as load_tensors

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    header = _header(data)
    if header is None:  # not a safetensors file: say what it is, if we can tell
        pickled = _pickle_kind(data[:8], path)
        if pickled:
            raise error(f"{path}: {pickled}, not a safetensors file; not loaded, because unpickling can run code "
                        "(only trust pickles you made yourself)")
        if not data:
            raise error(f"{path}: empty file, not a safetensors file")
        n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else None
        if n is not None and 8 + n > len(data) and n <= MAX_HEADER:
            raise error(f"{path}: a truncated safetensors file or not one (header of {n} bytes announced, file of "
                        f"{len(data)} bytes)")
        raise error(f"{path}: not a safetensors file ({len(data)} bytes starting {data[:8]!r})")
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors' own checks: offsets, dtypes, sizes
        msg = " ".join(str(exc).split())[:200]
        raise error(f"{path}: a corrupt or truncated safetensors file ({type(exc).__name__}: {msg})") from None
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or META_KEY not in meta:
        raise error(f"{path}: a safetensors file, but not one written by dpap-deploy (no {META_KEY!r} metadata; "
                    f"expected a {fmt} file)")
    try:
        doc = json.loads(meta[META_KEY])
    except (TypeError, ValueError, RecursionError) as exc:
        raise error(f"{path}: malformed {META_KEY} metadata (not JSON: {type(exc).__name__}: "
                    f"{str(exc)[:120]})") from None
    if not isinstance(doc, dict) or not {"format", "version", "tree"} <= set(doc):
        raise error(f"{path}: malformed {META_KEY} metadata (expected an object with format, version and tree)")
    if doc["format"] != fmt:
        raise error(f"{path}: a {repr(doc['format'])[:80]} file, not a {fmt!r} file")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise error(f"{path}: malformed {META_KEY} metadata (version {version!r} is not an integer)")
    if version > max_version:
        raise error(f"{path}: {fmt} version {version} is newer than this dpap-deploy reads ({max_version}); "
                    "update dpap-deploy")
    try:
        return _Decoder(tensors, path, error).decode(doc["tree"], [])
    except RecursionError:
        raise error(f"{path}: malformed {META_KEY} metadata (nested too deeply)") from None

