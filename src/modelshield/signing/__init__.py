"""OpenSSF Model Signing compatible signing and verification (needs ``cryptography``).

>>> from modelshield.signing import sign_model, verify_model       # doctest: +SKIP
>>> sign_model("my-model/", private_key="key.pem")                  # doctest: +SKIP
>>> verify_model("my-model/", public_key="key.pub").ok              # doctest: +SKIP

Hashing alone (:func:`hash_model`) needs nothing beyond the standard library; the rest imports
``cryptography`` on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelshield.signing.api import (
        SignResult,
        VerifyResult,
        default_signature_path,
        sign_model,
        verify_model,
    )
    from modelshield.signing.errors import SigningError, VerificationError
    from modelshield.signing.hashing import (
        DEFAULT_IGNORED,
        Manifest,
        Resource,
        Serialization,
        hash_model,
    )

# Imported on first use: the rule catalogue imports modelshield.signing.rules (through this
# package) in every scan, which needs none of them.
_LAZY = {
    "api": {"SignResult", "VerifyResult", "default_signature_path", "sign_model", "verify_model"},
    "errors": {"SigningError", "VerificationError"},
    "hashing": {"DEFAULT_IGNORED", "Manifest", "Resource", "Serialization", "hash_model"},
}


def __getattr__(name: str) -> Any:
    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(f"modelshield.signing.{module}"), name)
    raise AttributeError(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *(n for names in _LAZY.values() for n in names)})


__all__ = [
    "DEFAULT_IGNORED",
    "Manifest",
    "Resource",
    "Serialization",
    "SignResult",
    "SigningError",
    "VerificationError",
    "VerifyResult",
    "default_signature_path",
    "hash_model",
    "sign_model",
    "verify_model",
]
