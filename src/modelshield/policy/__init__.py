"""The policy layer: which callables may run during unpickling, and which are known-dangerous.

The knowledge is data (``policy/data/allowlist.toml``, ``dangerous.toml``, ``aliases.toml``), each
entry with its reason; this package validates, indexes and queries it::

    from modelshield.policy import Policy, Verdict

    policy = Policy.default()
    policy.classify("posix.system").verdict is Verdict.DANGEROUS

See :mod:`modelshield.policy.model` for pattern semantics and precedence.
"""

from __future__ import annotations

from modelshield.policy.model import (
    DANGEROUS_CATEGORIES,
    Aliases,
    Classification,
    Policy,
    PolicyEntry,
    Verdict,
    is_exact_pattern,
    load_aliases,
    load_entries,
)

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
