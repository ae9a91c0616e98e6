"""User configuration: ``.modelshield.toml`` or ``[tool.modelshield]`` in ``pyproject.toml``.

Accepted keys (all optional)::

    threshold = "high"            # default --threshold
    ignore = ["MS105"]            # rule IDs never reported (kept as suppressed)
    exclude = ["*.json"]          # glob patterns of paths skipped in directories
    include = ["*"]               # only files matching one of these are scanned in directories

    [[allow]]                     # extra callables allowed during unpickling
    name = "mypkg.models.MyNet"   # exact dotted name or fnmatch pattern
    reason = "our own model class, reviewed"

    [[baseline]]                  # accept known findings of one exact file
    sha256 = "<64 hex digits>"
    rules = ["MS102"]             # optional: only these rules; all rules when absent
    reason = "reviewed in SEC-123"

In ``pyproject.toml`` the same keys live under ``[tool.modelshield]``
(``[[tool.modelshield.allow]]``...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelshield.errors import ConfigError
from modelshield.findings import Severity
from modelshield.policy import PolicyEntry
from modelshield.rules.catalog import RULES

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = {"threshold", "ignore", "exclude", "include", "allow", "baseline"}


@dataclass(frozen=True)
class Baseline:
    sha256: str
    reason: str
    rules: frozenset[str] | None = None
    """None accepts every rule for that file."""


@dataclass(frozen=True)
class Config:
    source: str | None = None
    threshold: Severity | None = None
    ignore: frozenset[str] = frozenset()
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    allow: tuple[PolicyEntry, ...] = ()
    baselines: tuple[Baseline, ...] = field(default=())

    def baseline_for(self, sha256: str | None) -> Baseline | None:
        if sha256 is None:
            return None
        for b in self.baselines:
            if b.sha256 == sha256:
                return b
        return None


def _str_list(source: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ConfigError(source, f"'{key}' must be a list of strings")
    return tuple(value)


def _rule_ids(source: str, key: str, value: object) -> frozenset[str]:
    ids = _str_list(source, key, value)
    unknown = [i for i in ids if i not in RULES]
    if unknown:
        raise ConfigError(source, f"'{key}' names unknown rule IDs: {', '.join(unknown)}")
    return frozenset(ids)


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    """Validate a configuration table (already parsed from TOML)."""
    extra = set(data) - _TOP_KEYS
    if extra:
        raise ConfigError(
            source,
            f"unknown key(s): {', '.join(sorted(extra))} "
            f"(accepted: {', '.join(sorted(_TOP_KEYS))})",
        )
    threshold = None
    if "threshold" in data:
        if not isinstance(data["threshold"], str):
            raise ConfigError(source, "'threshold' must be a string")
        try:
            threshold = Severity.parse(data["threshold"])
        except ValueError as exc:
            raise ConfigError(source, str(exc)) from None
    allow: list[PolicyEntry] = []
    for i, item in enumerate(data.get("allow", [])):
        if not isinstance(item, dict) or set(item) - {"name", "reason"}:
            raise ConfigError(source, f"allow[{i}] must be a table with 'name' and 'reason'")
        name, reason = item.get("name"), item.get("reason")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(source, f"allow[{i}] needs a 'name' (dotted name or pattern)")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(
                source, f"allow[{i}] ({name}) needs a 'reason': say why it is safe to call"
            )
        allow.append(
            PolicyEntry(
                pattern=name.strip(),
                reason=reason.strip(),
                category="user",
                severity=Severity.INFO,
                origin=source,
            )
        )
    baselines: list[Baseline] = []
    for i, item in enumerate(data.get("baseline", [])):
        if not isinstance(item, dict) or set(item) - {"sha256", "rules", "reason"}:
            raise ConfigError(
                source, f"baseline[{i}] must be a table with 'sha256', 'reason' and 'rules'"
            )
        digest = item.get("sha256")
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise ConfigError(source, f"baseline[{i}] needs a 'sha256' of 64 hex digits")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(source, f"baseline[{i}] needs a 'reason'")
        rules = (
            _rule_ids(source, f"baseline[{i}].rules", item["rules"]) if "rules" in item else None
        )
        baselines.append(Baseline(digest.lower(), reason.strip(), rules))
    return Config(
        source=source,
        threshold=threshold,
        ignore=_rule_ids(source, "ignore", data.get("ignore", [])),
        exclude=_str_list(source, "exclude", data.get("exclude", [])),
        include=_str_list(source, "include", data.get("include", [])),
        allow=tuple(allow),
        baselines=tuple(baselines),
    )


def load_config_file(path: Path) -> Config:
    """Load ``.modelshield.toml`` or a ``pyproject.toml`` (its ``[tool.modelshield]`` table)."""
    import tomllib  # only when there is a file to read: ~9 ms at start-up otherwise

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        if not isinstance(tool, dict) or "modelshield" not in tool:
            return Config()
        table = tool["modelshield"]
        if not isinstance(table, dict):
            raise ConfigError(str(path), "[tool.modelshield] must be a table")
        return parse_config(table, f"{path} [tool.modelshield]")
    return parse_config(data, str(path))


def discover_config(start: Path) -> Config:
    """Find the configuration for a scan started in ``start`` (usually the working directory).

    Looks in ``start`` and its parents for ``.modelshield.toml``, then for a ``pyproject.toml``
    with a ``[tool.modelshield]`` table; stops at the first directory holding either (or a
    ``.git``). No file found gives the defaults.
    """
    for d in (start, *start.parents):
        dotfile = d / ".modelshield.toml"
        if dotfile.is_file():
            return load_config_file(dotfile)
        pyproject = d / "pyproject.toml"
        if pyproject.is_file():
            cfg = load_config_file(pyproject)
            if cfg.source is not None:
                return cfg
        if (d / ".git").exists():
            break
    return Config()
