"""Read tensors out of model files without torch and without executing anything.

Pickle-based checkpoints are read with a *restricted unpickler*: CPython's unpickler with a
``find_class`` that never imports. Every global the file names is looked up in a fixed table of
modelshield's own constructors (tensor rebuilds, storage types, dtypes, plain containers); any
other global stops the load with :class:`ConversionError`. The constructors only record
metadata (storage key, dtype, offset, shape, stride); tensor bytes are then read straight from
the storage records, never through pickle.

Supported sources: PyTorch zip checkpoints (``torch.save`` >= 1.6), legacy PyTorch files
(pre-1.6 stacked pickles), safetensors, NumPy ``.npy``/``.npz`` with plain dtypes, and plain
pickles of NumPy arrays.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import mmap
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelshield.errors import ModelShieldError
from modelshield.formats import compression as comp
from modelshield.formats import numpy as npy
from modelshield.formats import zip as zipf
from modelshield.pickle.names import fix_import
from modelshield.pickle.opcodes import Buffer

# safetensors dtype names and their sizes in bytes.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "C64": 8,
    "F64": 8,
    "I64": 8,
    "U64": 8,
}

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": "F32",
    "DoubleStorage": "F64",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
    "ComplexFloatStorage": "C64",
}

_TORCH_DTYPES = {
    "float32": "F32",
    "float": "F32",
    "float64": "F64",
    "double": "F64",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "long": "I64",
    "int32": "I32",
    "int": "I32",
    "int16": "I16",
    "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}

_NUMPY_KINDS = {
    ("f", 2): "F16",
    ("f", 4): "F32",
    ("f", 8): "F64",
    ("i", 1): "I8",
    ("i", 2): "I16",
    ("i", 4): "I32",
    ("i", 8): "I64",
    ("u", 1): "U8",
    ("u", 2): "U16",
    ("u", 4): "U32",
    ("u", 8): "U64",
    ("b", 1): "BOOL",
    ("c", 8): "C64",
}


class ConversionError(ModelShieldError):
    """The file cannot be read as tensors (unsupported content, damaged data)."""


@dataclass(frozen=True)
class Tensor:
    """One tensor: name, safetensors dtype, shape, and how to get its contiguous LE bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    read: Callable[[], bytes | memoryview]
    """Returns the tensor's bytes, C-contiguous and little-endian (``nbytes`` long)."""
    identity: tuple[object, ...] | None = None
    """Equal for tensors that are the same view of the same storage (tied weights)."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]


@dataclass
class TensorSet:
    """Tensors read from one file, plus what could not be converted."""

    tensors: list[Tensor] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Non-tensor entries (with their path in the structure), reported, never silently lost."""
    metadata: dict[str, str] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    maps: list[mmap.mmap] = field(default_factory=list)

    def release(self) -> None:
        """Drop this process's pages of the mapped input (they stay in the page cache): keeps
        resident memory at about one tensor while tensors are read one after another."""
        for m in self.maps:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                m.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        for c in self.closers:
            # A memoryview still referenced (e.g. by a caller's tensor) keeps the map open;
            # it is then released when the last reference goes.
            with contextlib.suppress(BufferError):
                c()
        self.closers.clear()

    def __enter__(self) -> TensorSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- restricted unpickler


@dataclass(frozen=True)
class _StorageType:
    dtype: str | None


@dataclass(frozen=True)
class _DType:
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str | None
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str


@dataclass
class _NdArray:
    """A NumPy array restored from a pickle: only its metadata and bytes."""

    shape: tuple[int, ...] = ()
    dtype: str | None = None
    big_endian: bool = False
    fortran: bool = False
    data: bytes = b""

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _NpDType) or not isinstance(raw, bytes | bytearray):
            raise ConversionError("only NumPy arrays of plain dtypes can be converted")
        self.shape = tuple(shape)
        self.dtype = dtype.st_dtype
        self.big_endian = dtype.big_endian
        self.fortran = bool(fortran)
        self.data = bytes(raw)


@dataclass
class _NpDType:
    st_dtype: str | None = None
    big_endian: bool = False
    itemsize: int = 0
    has_object: bool = False

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if len(state) > 1 and state[1] == ">":
            self.big_endian = True


def _np_dtype(spec: str, align: bool = False, copy: bool = True) -> _NpDType:
    kind, size = spec[:1], spec[1:]
    st = _NUMPY_KINDS.get((kind, int(size))) if size.isdigit() else None
    itemsize = int(size) * (4 if kind == "U" else 1) if size.isdigit() else 0
    return _NpDType(st, itemsize=itemsize, has_object=kind == "O")


class _JoblibWrapper:
    """Stands for joblib's NumpyArrayWrapper: BUILD fills its attributes, then the array's
    bytes follow in the stream (see :class:`_JoblibUnpickler`)."""

    shape: tuple[int, ...] = ()
    order: str = "C"
    dtype: _NpDType | None = None
    numpy_array_alignment_bytes: int | None = None


def _np_reconstruct(cls: object, shape: object, dtype: object) -> _NdArray:
    return _NdArray()


def _rebuild_v2(
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    if not isinstance(storage, _Storage) or storage.dtype is None:
        raise ConversionError("tensor without a typed storage")
    return _TensorRef(storage, offset, tuple(size), tuple(stride), storage.dtype)


def _rebuild_v3(
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    hooks: object,
    dtype: _DType,
    metadata: object = None,
) -> _TensorRef:
    st = _TORCH_DTYPES.get(dtype.name) if isinstance(dtype, _DType) else None
    if st is None:
        raise ConversionError(f"unsupported tensor dtype {dtype!r}")
    return _TensorRef(storage, offset, tuple(size), tuple(stride), st)


def _rebuild_parameter(
    data: object, requires_grad: bool = False, hooks: object = None, state: object = None
) -> object:
    return data


def _rebuild_from_type_v2(
    func: Callable[..., object], new_type: object, args: tuple[Any, ...], state: object
) -> object:
    return func(*args)


def _safe_table() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
        ("torch.storage", "UntypedStorage"): _StorageType(None),
        ("torch", "Size"): tuple,
        ("torch", "device"): str,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("_codecs", "encode"): _latin1_encode,
        ("codecs", "encode"): _latin1_encode,
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): _NdArray,
        ("numpy", "dtype"): _np_dtype,
        ("joblib.numpy_pickle", "NumpyArrayWrapper"): _JoblibWrapper,
        ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"): _JoblibWrapper,
    }
    for name, dt in _TORCH_STORAGE_DTYPES.items():
        table[("torch", name)] = _StorageType(dt)
    for name in _TORCH_DTYPES:
        table[("torch", name)] = _DType(name)
    return table


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise ConversionError(f"unexpected encoding {encoding!r} in a tensor pickle")
    return text.encode("latin1")


_TABLE = _safe_table()


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals from :data:`_TABLE` only; imports nothing named by the file."""

    def __init__(self, data: bytes | memoryview, storages: Callable[[tuple[Any, ...]], _Storage]):
        super().__init__(io.BytesIO(data))
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        module, name = fix_import(module, name, 2)  # Python 2 names, as CPython maps them
        try:
            return _TABLE[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{module}.{name} is not a tensor or container type; only tensors, storages, "
                "dtypes and plain containers can be converted"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple):
            raise ConversionError(f"unexpected persistent id {pid!r}")
        return self._storages(pid)


_PyUnpickler: Any = pickle._Unpickler
"""CPython's pure-Python unpickler, whose opcode table can be extended."""


class _JoblibUnpickler(_PyUnpickler):  # type: ignore[misc]
    """The pure-Python unpickler with the same restricted ``find_class``, which also reads the
    raw array bytes joblib writes after each NumpyArrayWrapper (as joblib.load does)."""

    dispatch = _PyUnpickler.dispatch.copy()

    def __init__(self, data: bytes | memoryview) -> None:
        super().__init__(io.BytesIO(data))

    find_class = _RestrictedUnpickler.find_class

    def persistent_load(self, pid: Any) -> Any:
        raise ConversionError(f"unexpected persistent id {pid!r}")

    def load_build(self) -> None:
        _PyUnpickler.load_build(self)
        wrapper = self.stack[-1]
        if isinstance(wrapper, _JoblibWrapper):
            self.stack[-1] = self._read_array(wrapper)

    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, w: _JoblibWrapper) -> _NdArray:
        dtype = w.dtype
        if dtype is None or dtype.has_object or not dtype.itemsize:
            raise ConversionError("joblib arrays of Python objects are not tensors")
        read: Callable[[int], bytes] = self.read
        if w.numpy_array_alignment_bytes is not None:
            padding = read(1)
            if padding:
                read(padding[0])
        n = math.prod(w.shape) * dtype.itemsize
        raw = read(n)
        if len(raw) != n:
            raise ConversionError("joblib array data is truncated")
        arr = _NdArray(tuple(w.shape), dtype.st_dtype, dtype.big_endian, w.order == "F", raw)
        return arr


def _storage_from_pid(pid: tuple[Any, ...]) -> _Storage:
    if len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
        raise ConversionError(f"unexpected persistent id {pid!r}")
    return _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))


# ---------------------------------------------------------------------------- walking the structure


def _flatten(obj: object, prefix: str, out: list[tuple[str, object]], skipped: list[str]) -> None:
    """Tensor leaves of nested dicts/lists with dotted names; everything else is skipped."""
    if isinstance(obj, _TensorRef | _NdArray):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, skipped)
    elif isinstance(obj, list | tuple) and any(
        isinstance(x, _TensorRef | _NdArray | dict | list | tuple) for x in obj
    ):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out, skipped)
    else:
        skipped.append(f"{prefix or '<root>'}: {type(obj).__name__} {_short(obj)}")


def _short(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _unwrap_state_dict(obj: object, skipped: list[str]) -> tuple[object, str]:
    """Checkpoints often nest the weights: {'state_dict': ...} or {'model': ...}.

    The other top-level entries (optimizer state, epoch...) are listed in ``skipped``: they are
    left out of the conversion, and said to be.
    """
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, _TensorRef) for v in inner.values()):
                for k, v in obj.items():
                    if k != key:
                        skipped.append(f"{k}: {type(v).__name__} (outside '{key}')")
                return inner, f"took '{key}'"
    return obj, ""


def _strided_bytes(
    raw: memoryview, itemsize: int, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
) -> bytes | memoryview:
    numel = math.prod(shape)
    if numel == 0:
        return b""
    contiguous = True
    expected = 1
    for dim, st in zip(reversed(shape), reversed(stride), strict=True):
        if dim != 1 and st != expected:
            contiguous = False
            break
        expected *= dim
    start = offset * itemsize
    if contiguous:
        end = start + numel * itemsize
        if end > len(raw):
            raise ConversionError("tensor extends past its storage")
        return raw[start:end]
    if offset < 0 or any(st < 0 for st in stride):
        raise ConversionError("negative storage offset or stride")
    last = offset + sum((dim - 1) * st for dim, st in zip(shape, stride, strict=True))
    if (last + 1) * itemsize > len(raw):
        raise ConversionError("tensor view extends past its storage")
    try:
        import numpy as np
    except ImportError:
        raise ConversionError("non-contiguous tensors need NumPy: pip install numpy") from None
    base = np.frombuffer(raw, dtype=np.dtype(f"V{itemsize}"))
    view = np.lib.stride_tricks.as_strided(
        base[offset:], shape=shape, strides=[s * itemsize for s in stride], writeable=False
    )
    return np.ascontiguousarray(view).tobytes()


def _byteswap(data: bytes | memoryview, itemsize: int) -> bytes:
    if itemsize == 1:
        return bytes(data)
    b = bytearray(data)
    for i in range(itemsize):
        b[i::itemsize] = bytes(data)[itemsize - 1 - i :: itemsize]
    return bytes(b)


# ---------------------------------------------------------------------------- readers


def read_tensors(path: str) -> TensorSet:
    """Open ``path`` and describe its tensors. The caller closes the result."""
    fh = open(path, "rb")  # noqa: SIM115 - closed by TensorSet.close()
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        fh.close()
        raise ConversionError(f"{path}: empty file")
    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    result = TensorSet()
    result.closers += [mm.close, fh.close]
    result.maps.append(mm)
    try:
        _read_buffer(mm, size, os.path.basename(path), result)
    except ConversionError:
        result.close()
        raise
    except (
        zipf.ZipError,
        zipf.MemberTooLarge,
        npy.NpyError,
        pickle.UnpicklingError,
        EOFError,
        struct.error,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as exc:
        result.close()
        raise ConversionError(f"{path}: damaged or unsupported content: {exc}") from None
    except BaseException:
        result.close()
        raise
    return result


def _read_buffer(buf: Buffer, size: int, name: str, result: TensorSet) -> None:
    head = bytes(memoryview(buf)[:16])
    if head.startswith(b"PK\x03\x04"):
        arc = zipf.read_zip(buf, size)
        if any(e.name.endswith("/data.pkl") for e in arc.entries):
            _read_torch_zip(buf, size, arc, result)
        elif arc.entries and all(e.name.endswith(".npy") for e in arc.entries if not e.is_dir):
            _read_npz(buf, size, arc, result)
        else:
            raise ConversionError(f"{name}: zip archive is neither a PyTorch checkpoint nor .npz")
    elif head.startswith(npy.MAGIC):
        _read_npy(buf, 0, size, os.path.splitext(name)[0] or "array", result)
    elif _is_safetensors(head, size):
        _read_safetensors(buf, size, result)
    elif head[:1] == b"\x80":
        _read_pickle_tensors(buf, size, result)
    elif (kind := comp.sniff_compression(bytes(memoryview(buf)[:4096]))) is not None:
        # Compressed joblib files (and compressed pickles) of arrays.
        spilled = comp.collect(comp.iter_decompress(kind, buf, 0, size, 1 << 40))
        result.closers.append(spilled.close)
        _read_buffer(spilled.buf, spilled.size, name, result)
    else:
        raise ConversionError(f"{name}: not a PyTorch, safetensors, NumPy or pickle file")


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _read_torch_zip(buf: Buffer, size: int, arc: zipf.ZipArchive, result: TensorSet) -> None:
    entries = {e.name: e for e in arc.entries}
    pkl = next(e for e in arc.entries if e.name.endswith("/data.pkl"))
    prefix = pkl.name[: -len("data.pkl")]
    order = entries.get(prefix + "byteorder")
    big = order is not None and zipf.read_member(buf, size, order, max_size=16).strip() == b"big"
    data = zipf.read_member(buf, size, pkl, max_size=1 << 30)
    obj = _RestrictedUnpickler(data, _storage_from_pid).load()
    obj, note = _unwrap_state_dict(obj, result.skipped)
    if note:
        result.metadata["modelshield.note"] = note
    leaves: list[tuple[str, object]] = []
    _flatten(obj, "", leaves, result.skipped)

    def storage_bytes(key: str) -> memoryview:
        entry = entries.get(f"{prefix}data/{key}")
        if entry is None:
            raise ConversionError(f"storage record data/{key} is missing")
        span = zipf.member_span(entry, size)
        if entry.method == zipf.STORED and span is not None:
            return memoryview(buf)[span[0] : span[1]]
        return memoryview(zipf.read_member(buf, size, entry, max_size=1 << 40))

    for name, ref in leaves:
        if not isinstance(ref, _TensorRef):
            result.skipped.append(f"{name}: unsupported array")
            continue
        result.tensors.append(_torch_tensor(name, ref, storage_bytes, big))


def _torch_tensor(
    name: str, ref: _TensorRef, storage_bytes: Callable[[str], memoryview], big: bool
) -> Tensor:
    itemsize = DTYPE_SIZES[ref.dtype]

    def read() -> bytes | memoryview:
        raw = storage_bytes(ref.storage.key)
        data = _strided_bytes(raw, itemsize, ref.offset, ref.shape, ref.stride)
        return _byteswap(data, itemsize) if big else data

    return Tensor(
        name,
        ref.dtype,
        ref.shape,
        read,
        (ref.storage.key, ref.offset, ref.shape, ref.stride, ref.dtype),
    )


def _read_pickle_tensors(buf: Buffer, size: int, result: TensorSet) -> None:
    """A plain pickle of NumPy arrays (possibly in dicts); legacy torch is handled too."""
    data = memoryview(buf)[:size]
    first: Any
    if buf.find(b"NumpyArrayWrapper", 0, size) >= 0:
        first = _JoblibUnpickler(data).load()  # joblib: array bytes follow their wrappers
    else:
        first = _RestrictedUnpickler(data, _storage_from_pid).load()
        if first == 0x1950A86A20F9469CFC6C:  # legacy torch.save magic number
            _read_legacy_torch(data, result)
            return
    obj, _ = _unwrap_state_dict(first, result.skipped)
    leaves: list[tuple[str, object]] = []
    _flatten(obj, "", leaves, result.skipped)
    for name, arr in leaves:
        if isinstance(arr, _NdArray):
            result.tensors.append(_ndarray_tensor(name, arr))
        else:
            result.skipped.append(f"{name}: a torch tensor outside a checkpoint")


def _ndarray_tensor(name: str, arr: _NdArray) -> Tensor:
    if arr.dtype is None:
        raise ConversionError(f"{name}: unsupported NumPy dtype")
    itemsize = DTYPE_SIZES[arr.dtype]
    raw = arr.data
    if arr.fortran and len(arr.shape) > 1:
        stride = tuple(math.prod(arr.shape[:i]) for i in range(len(arr.shape)))
        raw = bytes(_strided_bytes(memoryview(raw), itemsize, 0, arr.shape, stride))
    if arr.big_endian:
        raw = _byteswap(raw, itemsize)
    data = raw
    return Tensor(name, arr.dtype, arr.shape, lambda: data)


def _read_legacy_torch(data: memoryview, result: TensorSet) -> None:
    """Pre-1.6 torch.save: magic, protocol, sys_info, object pickle, storage keys, storages."""
    storages: dict[str, _Storage] = {}

    def pid_storage(pid: tuple[Any, ...]) -> _Storage:
        if len(pid) < 5 or pid[0] != "storage" or not isinstance(pid[1], _StorageType):
            raise ConversionError(f"unexpected persistent id {pid!r}")
        key = str(pid[2])
        st = storages.setdefault(key, _Storage(key, pid[1].dtype, int(pid[4])))
        if len(pid) > 5 and pid[5] is not None:
            # (view key, offset, size): a view of another storage.
            raise ConversionError("legacy storage views are not supported")
        return st

    offset = 0
    objs = []
    for _ in range(5):
        reader = _PositionedUnpickler(data, offset, pid_storage)
        objs.append(reader.load())
        offset = reader.position
    _magic, _proto, _sys_info, obj, keys = objs
    obj, _ = _unwrap_state_dict(obj, result.skipped)
    leaves: list[tuple[str, object]] = []
    _flatten(obj, "", leaves, result.skipped)
    # Untyped storages (dtypes without a legacy storage class) take their tensors' dtype.
    tensor_dtypes = {r.storage.key: r.dtype for _, r in leaves if isinstance(r, _TensorRef)}
    pos = offset
    blobs: dict[str, memoryview] = {}
    for key in keys:
        st = storages.get(str(key))
        dtype = (st.dtype if st else None) or tensor_dtypes.get(str(key))
        if dtype is None:
            raise ConversionError(f"legacy storage {key!r} has no dtype")
        numel = struct.unpack_from("<q", data, pos)[0]
        pos += 8
        n = numel * DTYPE_SIZES[dtype]
        if pos + n > len(data):
            raise ConversionError(f"legacy storage {key!r} is truncated")
        blobs[str(key)] = data[pos : pos + n]
        pos += n
    for name, ref in leaves:
        if isinstance(ref, _TensorRef):
            result.tensors.append(_torch_tensor(name, ref, blobs.__getitem__, False))
        else:
            result.skipped.append(f"{name}: unsupported array")


class _PositionedUnpickler:
    """Runs the restricted unpickler on ``data[offset:]`` and reports where it stopped."""

    def __init__(
        self, data: memoryview, offset: int, storages: Callable[[tuple[Any, ...]], _Storage]
    ) -> None:
        self._file = io.BytesIO(data[offset:])
        self._offset = offset
        self._unp = _RestrictedUnpickler(b"", storages)
        pickle.Unpickler.__init__(self._unp, self._file)
        self.position = offset

    def load(self) -> Any:
        obj = self._unp.load()
        self.position = self._offset + self._file.tell()
        return obj


def _read_npz(buf: Buffer, size: int, arc: zipf.ZipArchive, result: TensorSet) -> None:
    for entry in arc.entries:
        if entry.is_dir:
            continue
        data = zipf.read_member(buf, size, entry, max_size=1 << 40)
        _read_npy(data, 0, len(data), entry.name[: -len(".npy")], result)


def _read_npy(buf: Buffer, start: int, end: int, name: str, result: TensorSet) -> None:
    header = npy.parse_npy(buf, start, end)
    if header.has_object or not isinstance(header.descr, str):
        raise ConversionError(f"{name}: object or structured arrays cannot be converted")
    kind = header.descr.lstrip("<>|=")
    st = _NUMPY_KINDS.get((kind[:1], int(kind[1:]) if kind[1:].isdigit() else 0))
    if st is None:
        raise ConversionError(f"{name}: dtype {header.descr} has no safetensors equivalent")
    big = header.descr.startswith(">")
    itemsize = DTYPE_SIZES[st]
    data_start = start + header.data_offset
    shape = header.shape

    def read() -> bytes | memoryview:
        n = math.prod(shape) * itemsize
        raw = memoryview(buf)[data_start : data_start + n]
        if len(raw) != n:
            raise ConversionError(f"{name}: array data is truncated ({len(raw)} of {n} bytes)")
        if header.fortran_order and len(shape) > 1:
            stride = tuple(math.prod(shape[:i]) for i in range(len(shape)))
            raw = memoryview(bytes(_strided_bytes(raw, itemsize, 0, shape, stride)))
        return _byteswap(raw, itemsize) if big else raw

    result.tensors.append(Tensor(name, st, shape, read))


def _read_safetensors(buf: Buffer, size: int, result: TensorSet) -> None:
    view = memoryview(buf)
    n = int.from_bytes(view[:8], "little")
    header = json.loads(bytes(view[8 : 8 + n]))
    base = 8 + n
    meta = header.pop("__metadata__", None) or {}
    result.metadata.update({str(k): str(v) for k, v in meta.items()})
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = info["dtype"]
        if dtype not in DTYPE_SIZES:
            raise ConversionError(f"{name}: unsupported dtype {dtype}")
        result.tensors.append(
            Tensor(
                name,
                dtype,
                tuple(info["shape"]),
                _slicer(view, base + begin, base + end),
                ("st", begin),
            )
        )
    aliases = meta.get(ALIAS_KEY)
    if aliases:
        by_name = {t.name: t for t in result.tensors}
        for alias, target in json.loads(aliases).items():
            t = by_name[target]
            result.tensors.append(Tensor(alias, t.dtype, t.shape, t.read, t.identity))


def _slicer(view: memoryview, a: int, b: int) -> Callable[[], memoryview]:
    def read() -> memoryview:
        if b > len(view) or a > b:
            raise ConversionError(f"tensor data [{a}, {b}) lies outside the file")
        return view[a:b]

    return read


ALIAS_KEY = "modelshield.aliases"
"""safetensors metadata key: JSON object mapping each dropped tied name to the name kept."""


def iter_unique(tensors: list[Tensor]) -> Iterator[tuple[Tensor, list[str]]]:
    """Each distinct tensor once, with the names that alias it (tied weights)."""
    seen: dict[tuple[object, ...], tuple[Tensor, list[str]]] = {}
    order: list[tuple[Tensor, list[str]]] = []
    for t in tensors:
        if t.identity is not None and t.identity in seen:
            seen[t.identity][1].append(t.name)
            continue
        item: tuple[Tensor, list[str]] = (t, [])
        order.append(item)
        if t.identity is not None:
            seen[t.identity] = item
    yield from order
