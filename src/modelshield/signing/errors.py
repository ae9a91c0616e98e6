"""Errors raised by :mod:`modelshield.signing`."""

from __future__ import annotations

from modelshield.errors import ModelShieldError


class SigningError(ModelShieldError):
    """Signing could not be done, or the inputs (keys, certificates, paths) are unusable.

    Raised for problems with what the user supplied; the CLI maps it to exit code 2.
    """


class VerificationError(ModelShieldError):
    """A signature is malformed, does not verify, or is not trusted.

    Raised for anything wrong with the signature or the model it covers; the CLI maps it to
    exit code 1. Verification fails closed: every unexpected condition ends up here.
    """

    def diagnostics(self) -> str:
        return f"verification FAILED: {self}"
