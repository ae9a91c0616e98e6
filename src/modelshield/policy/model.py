"""Typed policy model: entries, verdicts, the TOML loader and the :class:`Policy` classifier.

The knowledge itself lives in ``policy/data/*.toml`` (one reason per entry); this module only
validates and indexes it.

Pattern semantics
-----------------
Patterns are ``fnmatch``-style (:func:`fnmatch.fnmatchcase`, case-sensitive) over the *full dotted
name* ``module.qualname``. ``*`` matches any run of characters **including dots**, so ``os.*``
matches ``os.system`` and ``os.path.join``; ``?`` matches one character and ``[A-Z]`` a class.
An entry may carry ``exclude`` patterns: names matching one of them are not matched by that
entry (the dangerous ``os.*`` excludes ``os.path.*``; the allowed ``sklearn.*.[A-Z]*`` excludes
attribute paths below a class such as ``sklearn.x.Estimator.fit``).

Precedence
----------
1. Names are normalised first (Python 2 names, C accelerator modules and platform aliases, see
   ``data/aliases.toml``), so ``posix.system``, ``nt.system`` and ``os.system`` classify the same.
2. A user-allowed entry whose pattern is an **exact name** (no wildcard) wins over everything:
   the user has named that one callable and takes responsibility for it.
3. Otherwise a DANGEROUS match wins over any ALLOWED match (built-in or user wildcard). When
   several dangerous entries match, the most severe is reported, then the most specific.
4. Otherwise an ALLOWED match (most specific pattern first) gives ALLOWED.
5. Otherwise the verdict is UNKNOWN (not allowlisted: the rules decide what that costs).
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

from modelshield.errors import PolicyError
from modelshield.findings import Severity

__all__ = [
    "DANGEROUS_CATEGORIES",
    "Aliases",
    "Classification",
    "Policy",
    "PolicyEntry",
    "Verdict",
    "is_exact_pattern",
    "load_aliases",
    "load_entries",
]

DANGEROUS_CATEGORIES: Final[frozenset[str]] = frozenset(
    {
        "code-execution",
        "process",
        "filesystem",
        "network",
        "native-code",
        "package-install",
        "indirection",
        "deserialization",
        "debugger",
        "system",
    }
)
"""The categories a dangerous entry may have."""

KINDS: Final[frozenset[str]] = frozenset({"allowed", "dangerous"})

_WILDCARD_CHARS: Final[frozenset[str]] = frozenset("*?[")
_CACHE_LIMIT: Final[int] = 1 << 16
_NAME_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]+$")


class Verdict(enum.Enum):
    """What the policy says about one callable."""

    ALLOWED = "allowed"
    DANGEROUS = "dangerous"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PolicyEntry:
    """One allowlist or denylist entry, with the reason it is there."""

    pattern: str
    """fnmatch-style pattern over the full dotted name, e.g. ``os.*``, ``builtins.eval``."""
    reason: str
    category: str
    """Dangerous: one of :data:`DANGEROUS_CATEGORIES`. Allowed: free text (``torch``...)."""
    severity: Severity
    """CRITICAL..LOW for dangerous entries, INFO for allowed ones."""
    cwe: int | None = None
    source: str | None = None
    """Advisory or reference (GHSA id, CVE, URL) for published scanner bypasses."""
    origin: str = "builtin"
    """``builtin`` or the configuration file a user entry came from."""
    exclude: tuple[str, ...] = ()
    """Patterns this entry does not apply to (e.g. ``os.path.*`` for ``os.*``)."""

    @property
    def exact(self) -> bool:
        """True when the pattern names one callable (no wildcard character)."""
        return is_exact_pattern(self.pattern)


@dataclass(frozen=True)
class Classification:
    """The verdict for one name and the entry that decided it (None for UNKNOWN)."""

    verdict: Verdict
    entry: PolicyEntry | None


def is_exact_pattern(pattern: str) -> bool:
    """True when ``pattern`` contains no fnmatch wildcard (``*``, ``?``, ``[``)."""
    return not any(ch in _WILDCARD_CHARS for ch in pattern)


# ---------------------------------------------------------------------------------------------
# Aliases


@dataclass(frozen=True)
class Aliases:
    """Name normalisation: exact renames first, then the longest matching module prefix."""

    names: Mapping[str, str] = field(default_factory=dict)
    """Full dotted name -> canonical name (``__builtin__.xrange`` -> ``builtins.range``)."""
    modules: Mapping[str, str] = field(default_factory=dict)
    """Module -> canonical module (``posix`` -> ``os``); applies to the module and its children."""

    def normalize(self, name: str) -> str:
        """Return the canonical spelling of a full dotted name."""
        name = name.strip()
        for _ in range(4):  # aliases may chain (cPickle -> pickle is one step); bounded anyway
            renamed = self._normalize_once(name)
            if renamed == name:
                break
            name = renamed
        return name

    def _normalize_once(self, name: str) -> str:
        exact = self.names.get(name)
        if exact is not None:
            return exact
        # Longest module prefix first: "asyncio.subprocess" must not be shadowed by "asyncio".
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            target = self.modules.get(module)
            if target is not None:
                rest = parts[cut:]
                return ".".join([target, *rest]) if rest else target
        return name


def load_aliases(text: str, source: str = "aliases.toml") -> Aliases:
    """Parse an alias table (``[modules]`` and ``[names]`` string maps)."""
    data = _parse_toml(text, source)
    modules = _string_map(data.get("modules", {}), f"{source}: [modules]")
    names = _string_map(data.get("names", {}), f"{source}: [names]")
    unknown = set(data) - {"schema", "modules", "names"}
    if unknown:
        raise PolicyError(f"{source}: unknown top-level keys {sorted(unknown)}")
    return Aliases(names=names, modules=modules)


def _string_map(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a table of strings")
    out: dict[str, str] = {}
    for key, target in value.items():
        if not isinstance(target, str) or not target or not key:
            raise PolicyError(f"{where}: {key!r} must map to a non-empty string")
        out[str(key)] = target
    return out


# ---------------------------------------------------------------------------------------------
# Loader

_GROUP_KEYS: Final[frozenset[str]] = frozenset(
    {"name", "category", "severity", "cwe", "source", "entries", "note"}
)
_ENTRY_KEYS: Final[frozenset[str]] = frozenset(
    {"pattern", "reason", "category", "severity", "cwe", "source", "exclude"}
)


def load_entries(text: str, kind: str, origin: str = "builtin") -> tuple[PolicyEntry, ...]:
    """Parse and validate one policy TOML document.

    ``kind`` is ``"allowed"`` or ``"dangerous"``. The document holds ``[[group]]`` tables; each
    group gives defaults (``category``, ``severity``, ``cwe``, ``source``) for its ``entries``,
    an array of inline tables with at least ``pattern`` and ``reason``; an entry may override
    any default. Raises :class:`~modelshield.errors.PolicyError` on any schema problem.
    """
    if kind not in KINDS:
        raise PolicyError(f"unknown policy kind {kind!r} (expected 'allowed' or 'dangerous')")
    data = _parse_toml(text, origin)
    unknown = set(data) - {"schema", "group"}
    if unknown:
        raise PolicyError(f"{origin}: unknown top-level keys {sorted(unknown)}")
    if data.get("schema", 1) != 1:
        raise PolicyError(f"{origin}: unsupported schema {data.get('schema')!r} (expected 1)")
    groups = data.get("group", [])
    if not isinstance(groups, list):
        raise PolicyError(f"{origin}: 'group' must be an array of tables ([[group]])")
    entries: list[PolicyEntry] = []
    seen: set[str] = set()
    for gi, group in enumerate(groups):
        where = f"{origin}: group #{gi + 1}"
        if not isinstance(group, dict):
            raise PolicyError(f"{where} must be a table")
        if isinstance(group.get("name"), str):
            where = f"{origin}: group {group['name']!r}"
        bad = set(group) - _GROUP_KEYS
        if bad:
            raise PolicyError(f"{where}: unknown keys {sorted(bad)}")
        raw_entries = group.get("entries")
        if not isinstance(raw_entries, list) or not raw_entries:
            raise PolicyError(f"{where}: 'entries' must be a non-empty array")
        for ei, raw in enumerate(raw_entries):
            entry = _build_entry(raw, group, kind, origin, f"{where} entry #{ei + 1}")
            if entry.pattern in seen:
                raise PolicyError(f"{where}: duplicate pattern {entry.pattern!r}")
            seen.add(entry.pattern)
            entries.append(entry)
    return tuple(entries)


def _build_entry(
    raw: object, group: Mapping[str, Any], kind: str, origin: str, where: str
) -> PolicyEntry:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} must be an inline table")
    bad = set(raw) - _ENTRY_KEYS
    if bad:
        raise PolicyError(f"{where}: unknown keys {sorted(bad)}")
    merged: dict[str, Any] = {k: v for k, v in group.items() if k in _ENTRY_KEYS}
    merged.update(raw)

    pattern = _require_str(merged, "pattern", where)
    where = f"{where} ({pattern})"
    _check_pattern(pattern, where)
    reason = _require_str(merged, "reason", where)
    category = _require_str(merged, "category", where)

    severity_text = merged.get("severity", "info" if kind == "allowed" else None)
    if not isinstance(severity_text, str):
        raise PolicyError(f"{where}: missing or non-string 'severity'")
    try:
        severity = Severity.parse(severity_text)
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from None

    if kind == "dangerous":
        if category not in DANGEROUS_CATEGORIES:
            raise PolicyError(
                f"{where}: category {category!r} is not one of {sorted(DANGEROUS_CATEGORIES)}"
            )
        if severity == Severity.INFO:
            raise PolicyError(f"{where}: a dangerous entry cannot have severity 'info'")
    elif severity != Severity.INFO:
        raise PolicyError(f"{where}: an allowed entry must have severity 'info'")

    cwe = merged.get("cwe")
    if cwe is not None and (isinstance(cwe, bool) or not isinstance(cwe, int) or cwe <= 0):
        raise PolicyError(f"{where}: 'cwe' must be a positive integer")
    source = merged.get("source")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise PolicyError(f"{where}: 'source' must be a non-empty string when present")
    exclude_raw = merged.get("exclude", [])
    if not isinstance(exclude_raw, list) or not all(isinstance(x, str) and x for x in exclude_raw):
        raise PolicyError(f"{where}: 'exclude' must be an array of patterns")
    for x in exclude_raw:
        _check_pattern(x, where)

    return PolicyEntry(
        pattern=pattern,
        reason=reason.strip(),
        category=category,
        severity=severity,
        cwe=cwe,
        source=source.strip() if isinstance(source, str) else None,
        origin=origin,
        exclude=tuple(exclude_raw),
    )


def _require_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{where}: missing or empty {key!r}")
    return value


def _check_pattern(pattern: str, where: str) -> None:
    if pattern != pattern.strip() or not _NAME_RE.match(pattern):
        raise PolicyError(f"{where}: invalid pattern {pattern!r}")
    if pattern.startswith(".") or pattern.endswith(".") or ".." in pattern:
        raise PolicyError(f"{where}: invalid dotted name {pattern!r}")
    if pattern.strip("*?.") == "":
        raise PolicyError(f"{where}: pattern {pattern!r} matches everything")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    # The built-in data files have a JSON mirror (parsing TOML costs ~20 ms at every start-up);
    # it is used only when it was made from exactly this text.
    hit = _mirror().get(hashlib.sha256(text.encode("utf-8")).hexdigest())
    if isinstance(hit, dict):
        return hit
    import tomllib  # only for user policies and edited data files: ~9 ms at start-up

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: invalid TOML: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Index


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    """Compiled fnmatch pattern; compiled on first use so that start-up stays fast."""
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True)
class _Compiled:
    entry: PolicyEntry
    pattern: str | None  # normalised fnmatch pattern; None: exact name
    excludes: tuple[str, ...]  # normalised fnmatch patterns
    specificity: int  # count of literal characters: more literal text = more specific

    def matches(self, name: str) -> bool:
        if self.pattern is not None and not _regex(self.pattern).match(name):
            return False
        return not any(_regex(x).match(name) for x in self.excludes)


class _Index:
    """Exact names in a dict; wildcard patterns bucketed by their literal first module."""

    def __init__(self, entries: Sequence[PolicyEntry], aliases: Aliases) -> None:
        self.exact: dict[str, list[_Compiled]] = {}
        self.buckets: dict[str, list[_Compiled]] = {}
        self.floating: list[_Compiled] = []
        for entry in entries:
            pattern = _normalize_pattern(entry.pattern, aliases)
            excludes = tuple(_normalize_pattern(x, aliases) for x in entry.exclude)
            literal = sum(1 for ch in pattern if ch not in _WILDCARD_CHARS)
            if is_exact_pattern(pattern):
                self.exact.setdefault(pattern, []).append(
                    _Compiled(entry, None, excludes, literal + 1000)
                )
                continue
            compiled = _Compiled(entry, pattern, excludes, literal)
            head = _literal_head(pattern)
            if head is None:
                self.floating.append(compiled)
            else:
                self.buckets.setdefault(head, []).append(compiled)

    def matches(self, name: str) -> list[_Compiled]:
        found = [c for c in self.exact.get(name, ()) if c.matches(name)]
        head = name.split(".", 1)[0]
        found.extend(c for c in self.buckets.get(head, ()) if c.matches(name))
        found.extend(c for c in self.floating if c.matches(name))
        return found


def _literal_head(pattern: str) -> str | None:
    """The first dotted component when it is fully literal and followed by a dot."""
    head, dot, _ = pattern.partition(".")
    if not dot or not is_exact_pattern(head):
        return None
    return head


def _normalize_pattern(pattern: str, aliases: Aliases) -> str:
    """Apply module aliases to the literal head of a pattern (``_pickle.*`` -> ``pickle.*``)."""
    if is_exact_pattern(pattern):
        return aliases.normalize(pattern)
    # Split off the literal dotted prefix and normalise it as a module name.
    cut = min(i for i, ch in enumerate(pattern) if ch in _WILDCARD_CHARS)
    prefix = pattern[:cut]
    if "." not in prefix:
        return pattern
    module, _, tail = prefix.rpartition(".")
    return aliases.normalize(module) + "." + tail + pattern[cut:]


# ---------------------------------------------------------------------------------------------
# Policy


class Policy:
    """Classifies full dotted names as ALLOWED, DANGEROUS or UNKNOWN.

    Instances are immutable; :meth:`with_allowed` returns a new policy. Results are cached per
    instance, so classifying the same name repeatedly is a dictionary lookup.
    """

    def __init__(
        self,
        allowed: Iterable[PolicyEntry],
        dangerous: Iterable[PolicyEntry],
        aliases: Aliases | None = None,
        user_allowed: Iterable[PolicyEntry] = (),
    ) -> None:
        self._allowed = tuple(allowed)
        self._dangerous = tuple(dangerous)
        self._user = tuple(user_allowed)
        self._aliases = aliases if aliases is not None else Aliases()
        self._allowed_index = _Index(self._allowed + self._user, self._aliases)
        self._dangerous_index = _Index(self._dangerous, self._aliases)
        self._user_exact: dict[str, PolicyEntry] = {}
        for entry in self._user:
            if entry.exact:
                self._user_exact[self._aliases.normalize(entry.pattern)] = entry
        self._cache: dict[str, Classification] = {}

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Policy:
        """The built-in policy (data files parsed once per process)."""
        return _default_policy()

    def with_allowed(self, entries: Iterable[PolicyEntry]) -> Policy:
        """A new policy with user allowlist entries added.

        An entry whose pattern is an exact name (no ``*``, ``?`` or ``[``) overrides a dangerous
        match for that one name. A wildcard entry only allows names no dangerous entry matches.
        """
        extra = tuple(entries)
        for entry in extra:
            if not isinstance(entry, PolicyEntry):
                raise PolicyError(f"user allowlist: {entry!r} is not a PolicyEntry")
            where = f"{entry.origin}: allowed entry {entry.pattern!r}"
            _check_pattern(entry.pattern, where)
            if not entry.reason.strip():
                raise PolicyError(f"{where}: missing reason")
        return Policy(self._allowed, self._dangerous, self._aliases, self._user + extra)

    # -- queries -------------------------------------------------------------------------------

    @property
    def allowed_entries(self) -> tuple[PolicyEntry, ...]:
        """Built-in allowlist entries followed by user entries."""
        return self._allowed + self._user

    @property
    def dangerous_entries(self) -> tuple[PolicyEntry, ...]:
        return self._dangerous

    @property
    def aliases(self) -> Aliases:
        return self._aliases

    def normalize(self, name: str) -> str:
        """The canonical spelling of ``name`` used for matching."""
        return self._aliases.normalize(name)

    def classify(self, name: str) -> Classification:
        """Classify one full dotted name (``module.qualname``)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        result = self._classify(self._aliases.normalize(name))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[name] = result
        return result

    def cache_size(self) -> int:
        """Number of cached classifications (for tests and diagnostics)."""
        return len(self._cache)

    def _classify(self, name: str) -> Classification:
        user = self._user_exact.get(name)
        if user is not None:
            return Classification(Verdict.ALLOWED, user)
        dangerous = self._dangerous_index.matches(name)
        if dangerous:
            best = max(dangerous, key=lambda c: (c.entry.severity, c.specificity))
            return Classification(Verdict.DANGEROUS, best.entry)
        allowed = self._allowed_index.matches(name)
        if allowed:
            best = max(allowed, key=lambda c: c.specificity)
            return Classification(Verdict.ALLOWED, best.entry)
        return Classification(Verdict.UNKNOWN, None)


def _read_data(filename: str) -> str:
    return (_DATA_DIR / filename).read_text("utf-8")


_DATA_DIR = Path(__file__).parent / "data"
_MIRROR = _DATA_DIR / "compiled.json"
DATA_FILES = ("aliases.toml", "allowlist.toml", "dangerous.toml")


@cache
def _mirror() -> dict[str, Any]:
    try:
        data = json.loads(_MIRROR.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def compile_mirror() -> str:
    """The JSON mirror of the built-in TOML data files (``python -m modelshield.policy``)."""
    import tomllib

    mirror = {}
    for name in DATA_FILES:
        text = _read_data(name)
        mirror[hashlib.sha256(text.encode("utf-8")).hexdigest()] = tomllib.loads(text)
    return json.dumps(mirror, sort_keys=True, separators=(",", ":")) + "\n"


@cache
def _default_policy() -> Policy:
    aliases = load_aliases(_read_data("aliases.toml"), "aliases.toml")
    allowed = load_entries(_read_data("allowlist.toml"), "allowed")
    dangerous = load_entries(_read_data("dangerous.toml"), "dangerous")
    return Policy(allowed, dangerous, aliases)
