"""Model serialization for OpenSSF Model Signing: walk a model, hash its files, build a manifest.

The rules are those of the OpenSSF model signing format (``model_signing`` 1.x):

* A model is a directory or a single file. In a directory every regular file below it is an
  item, named by its path relative to the model root with ``/`` separators; a single-file model
  has one item named ``.``.
* ``ignore_paths`` are relative to the model root; a file is left out when its path equals an
  ignored path or lies below it. By default ``.git``, ``.gitattributes``, ``.github`` and
  ``.gitignore`` are ignored, and so is the signature file when it lies inside the model.
* Method ``files``: one digest per file over its whole content. Method ``shards``: each file is
  cut into ``shard_size``-byte pieces (the last one shorter, empty files have none), each named
  ``path:start:end`` and hashed separately; the digest algorithm is then named
  ``<hash>-sharded-<shard_size>``.
* Items are sorted by path components (then start offset for shards). The subject digest of the
  in-toto statement is SHA-256 over the raw digests concatenated in that order.
* Symbolic links are an error unless ``allow_symlinks`` (then a link to a file is hashed as the
  file it points to; a link to a directory is always an error). Special files are an error.

Hashing streams every file through a fixed per-worker buffer (memory stays flat whatever the model
size) and runs files (or shards) in parallel on a thread pool, largest first; ``hashlib`` releases
the GIL while it hashes, so threads use every core.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelshield.signing.errors import SigningError

DEFAULT_IGNORED = (".git", ".gitattributes", ".github", ".gitignore")
"""Paths every signature leaves out unless told otherwise (as ``model_signing`` does)."""

DEFAULT_SHARD_SIZE = 1_000_000_000
CHUNK_SIZE = 1 << 20
"""Bytes read per call: large enough to amortise the call, small enough to stay in cache."""


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def _blake3() -> _Hasher:
    try:
        import blake3  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SigningError("hash type 'blake3' needs the 'blake3' package") from exc
    return blake3.blake3()  # type: ignore[no-any-return,unused-ignore]


HASHERS: dict[str, Callable[[], _Hasher]] = {
    "sha256": hashlib.sha256,
    "blake2b": hashlib.blake2b,
    "blake3": _blake3,
}


@dataclass(frozen=True)
class Serialization:
    """How a manifest was made; recorded in the signed statement so a verifier can redo it."""

    method: str = "files"
    hash_type: str = "sha256"
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = ()
    shard_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("files", "shards"):
            raise ValueError(f"unknown serialization method {self.method!r}")
        if self.hash_type not in HASHERS:
            raise ValueError(f"unsupported hash type {self.hash_type!r}")
        if self.method == "shards" and (self.shard_size is None or self.shard_size <= 0):
            raise ValueError("shards serialization needs a positive shard_size")
        if self.method == "files" and self.shard_size is not None:
            raise ValueError("files serialization takes no shard_size")

    @property
    def algorithm(self) -> str:
        """The algorithm name recorded on every resource."""
        if self.method == "shards":
            return f"{self.hash_type}-sharded-{self.shard_size}"
        return self.hash_type

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "hash_type": self.hash_type}
        if self.method == "shards":
            out["shard_size"] = self.shard_size
        out["allow_symlinks"] = self.allow_symlinks
        if self.ignore_paths:
            out["ignore_paths"] = list(self.ignore_paths)
        return out

    @classmethod
    def from_json(cls, obj: object) -> Serialization:
        """Parse the ``serialization`` object of a statement; raises ``ValueError``."""
        if not isinstance(obj, dict):
            raise ValueError("serialization is not an object")
        method = obj.get("method")
        hash_type = obj.get("hash_type")
        allow = obj.get("allow_symlinks")
        ignore = obj.get("ignore_paths", [])
        if not isinstance(method, str) or not isinstance(hash_type, str):
            raise ValueError("serialization needs string 'method' and 'hash_type'")
        if not isinstance(allow, bool):
            raise ValueError("serialization.allow_symlinks must be a boolean")
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise ValueError("serialization.ignore_paths must be a list of strings")
        shard_size = obj.get("shard_size") if method == "shards" else None
        if isinstance(shard_size, float) and shard_size.is_integer():
            shard_size = int(shard_size)  # protobuf Struct JSON writes numbers as doubles
        if shard_size is not None and type(shard_size) is not int:
            raise ValueError("serialization.shard_size must be an integer")
        return cls(method, hash_type, allow, tuple(ignore), shard_size)


@dataclass(frozen=True)
class Resource:
    """One manifest item: a file (``files``) or ``path:start:end`` (``shards``)."""

    name: str
    algorithm: str
    digest: str
    """lowercase hex"""

    @property
    def path(self) -> str:
        """The file this item belongs to."""
        return self.name.rsplit(":", 2)[0] if self.algorithm.count("-sharded-") else self.name


def sort_key(name: str, sharded: bool) -> tuple[tuple[str, ...], int, int]:
    """Order of resources: by path components, then shard offsets."""
    if sharded:
        path, start, end = name.rsplit(":", 2)
        return (tuple(path.split("/")), int(start), int(end))
    return (tuple(name.split("/")), 0, 0)


@dataclass(frozen=True)
class Manifest:
    model_name: str
    resources: tuple[Resource, ...]
    serialization: Serialization
    bytes_hashed: int = field(default=0, compare=False)

    def root_digest(self) -> str:
        """SHA-256 over the raw digests in order: the in-toto subject digest."""
        h = hashlib.sha256()
        for r in self.resources:
            h.update(bytes.fromhex(r.digest))
        return h.hexdigest()

    def by_name(self) -> dict[str, Resource]:
        return {r.name: r for r in self.resources}


@dataclass(frozen=True)
class _Item:
    name: str
    path: str
    start: int
    end: int | None
    """None: read to end of file."""
    cost: int


def normalize_ignore(paths: Iterable[str | os.PathLike[str]]) -> tuple[str, ...]:
    """Ignore paths as relative POSIX strings without ``.`` components or trailing slashes."""
    out: list[str] = []
    for p in paths:
        parts = [c for c in Path(p).as_posix().split("/") if c not in ("", ".")]
        if not parts or ".." in parts or Path(p).is_absolute():
            continue
        rel = "/".join(parts)
        if rel not in out:
            out.append(rel)
    return tuple(out)


def _ignored(rel: str, ignore: Sequence[str]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in ignore)


def _list_files(root: Path, ignore: Sequence[str], allow_symlinks: bool) -> list[tuple[str, int]]:
    """Regular files under ``root`` (relative POSIX path, size), ignoring ``ignore``."""
    found: list[tuple[str, int]] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            raise SigningError(f"cannot list {directory}: {exc.strerror or exc}") from exc
        for entry in entries:
            rel = prefix + entry.name
            if _ignored(rel, ignore):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    if not allow_symlinks:
                        raise SigningError(
                            f"{rel}: is a symbolic link (allow symlinks to hash its target)"
                        )
                    st = entry.stat(follow_symlinks=True)
                    if stat.S_ISDIR(st.st_mode):
                        raise SigningError(f"{rel}: symbolic links to directories are refused")
            except FileNotFoundError as exc:
                raise SigningError(f"{rel}: dangling symbolic link or file vanished") from exc
            except OSError as exc:
                raise SigningError(f"{rel}: {exc.strerror or exc}") from exc
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                found.append((rel, st.st_size))
            else:
                raise SigningError(f"{rel}: not a regular file or directory")
    return found


_LOCAL = threading.local()


def _buffer() -> memoryview:
    buf: memoryview | None = getattr(_LOCAL, "buf", None)
    if buf is None:
        buf = memoryview(bytearray(CHUNK_SIZE))
        _LOCAL.buf = buf
    return buf


def _hash_range(path: str, start: int, end: int | None, hash_type: str, follow: bool) -> str:
    """Stream ``path[start:end]`` through the hash; raises OSError or SigningError."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SigningError(f"{path}: not a regular file")
        if start:
            os.lseek(fd, start, os.SEEK_SET)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, start, 0 if end is None else end - start, os.POSIX_FADV_SEQUENTIAL)
        h = HASHERS[hash_type]()
        buf = _buffer()
        remaining = -1 if end is None else end - start
        while remaining:
            want = CHUNK_SIZE if remaining < 0 else min(CHUNK_SIZE, remaining)
            n = os.readv(fd, [buf[:want]])
            if n == 0:
                if remaining > 0:
                    raise SigningError(f"{path}: file shrank while it was hashed")
                break
            h.update(buf[:n])
            if remaining > 0:
                remaining -= n
        return h.digest().hex()
    finally:
        os.close(fd)


def default_jobs() -> int:
    return min(32, os.cpu_count() or 1)


def hash_model(
    model_path: str | os.PathLike[str],
    serialization: Serialization | None = None,
    *,
    model_name: str | None = None,
    jobs: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Serialize the model at ``model_path`` into a :class:`Manifest`.

    ``jobs``: hashing threads (0: one per CPU). ``progress(done_bytes, total_bytes)`` is called
    as items finish. Raises :class:`SigningError` for unreadable or unsupported content.
    """
    ser = serialization or Serialization(ignore_paths=DEFAULT_IGNORED)
    root = Path(model_path)
    try:
        st = root.lstat()
    except OSError as exc:
        raise SigningError(f"{root}: {exc.strerror or exc}") from exc
    follow = ser.allow_symlinks
    if stat.S_ISLNK(st.st_mode):
        if not follow:
            raise SigningError(f"{root}: is a symbolic link (allow symlinks to use its target)")
        st = root.stat()
    if stat.S_ISDIR(st.st_mode):
        files = [
            (rel, os.path.join(root, rel), size)
            for rel, size in _list_files(root, ser.ignore_paths, follow)
        ]
    elif stat.S_ISREG(st.st_mode):
        files = [(".", os.fspath(root), st.st_size)]
    else:
        raise SigningError(f"{root}: not a regular file or directory")
    items: list[_Item] = []
    for rel, full, size in files:
        if ser.method == "files":
            items.append(_Item(rel, full, 0, None, size))
        else:
            assert ser.shard_size is not None
            for start in range(0, size, ser.shard_size):
                end = min(size, start + ser.shard_size)
                items.append(_Item(f"{rel}:{start}:{end}", full, start, end, end - start))
    total = sum(i.cost for i in items)
    order = sorted(items, key=lambda i: -i.cost)  # largest first: balanced finish
    workers = max(1, min(jobs or default_jobs(), len(order) or 1))
    done = 0
    lock = threading.Lock()

    def work(item: _Item) -> tuple[_Item, str]:
        nonlocal done
        try:
            digest = _hash_range(item.path, item.start, item.end, ser.hash_type, follow)
        except OSError as exc:
            raise SigningError(f"{item.name}: {exc.strerror or exc}") from exc
        if progress is not None:
            with lock:
                done += item.cost
                progress(done, total)
        return item, digest

    if workers == 1:
        results = [work(i) for i in order]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="modelshield-hash") as pool:
            results = list(pool.map(work, order))
    sharded = ser.method == "shards"
    resources = sorted(
        (Resource(item.name, ser.algorithm, digest) for item, digest in results),
        key=lambda r: sort_key(r.name, sharded),
    )
    name = model_name or root.name or os.path.basename(os.path.abspath(root))
    return Manifest(name, tuple(resources), ser, bytes_hashed=total)


__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_IGNORED",
    "DEFAULT_SHARD_SIZE",
    "HASHERS",
    "Manifest",
    "Resource",
    "Serialization",
    "default_jobs",
    "hash_model",
    "normalize_ignore",
    "sort_key",
]
