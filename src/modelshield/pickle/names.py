"""Spelling of global names: how CPython maps the (module, name) a pickle asks for.

``fix_imports`` (on by default) maps Python 2 names for protocols below 3 using the tables in
the standard library's ``_compat_pickle`` (plain data); we apply the same mapping so that, for
example, ``commands.getoutput`` is seen as ``subprocess.getoutput``. ``canonical`` further folds
C-accelerator and platform aliases (``posix.system`` is ``os.system``) so that one name stands for
one object.
"""

from __future__ import annotations

import _compat_pickle
from functools import lru_cache

_MODULE_ALIASES = {
    "posix": "os",
    "nt": "os",
    "posixpath": "os.path",
    "ntpath": "os.path",
    "genericpath": "os.path",
    "__builtin__": "builtins",
    "__builtins__": "builtins",
    "_pickle": "pickle",
    "_io": "io",
    "_operator": "operator",
    "_functools": "functools",
    "_codecs": "codecs",
    "_collections": "collections",
    "_socket": "socket",
    "_thread": "threading",
    "_bz2": "bz2",
    "_lzma": "lzma",
    "_sre": "re",
    "_datetime": "datetime",
    "_decimal": "decimal",
    "_pydecimal": "decimal",
    "_struct": "struct",
    "_marshal": "marshal",
}


def fix_import(module: str, name: str, protocol: int) -> tuple[str, str]:
    """Apply CPython's Python 2 -> 3 renaming for protocols below 3."""
    if protocol < 3:
        mapped = _compat_pickle.NAME_MAPPING.get((module, name))
        if mapped is not None:
            return mapped
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name


@lru_cache(maxsize=65536)
def canonical(dotted: str) -> str:
    """Fold aliases: ``posix.system`` -> ``os.system``, ``_pickle.loads`` -> ``pickle.loads``."""
    head, _, rest = dotted.partition(".")
    alias = _MODULE_ALIASES.get(head)
    if alias is None:
        return dotted
    return f"{alias}.{rest}" if rest else alias


def is_identifier_path(dotted: str) -> bool:
    """True for names made of Python identifiers separated by dots (``os.path.join``)."""
    return bool(dotted) and all(part.isidentifier() for part in dotted.split("."))
