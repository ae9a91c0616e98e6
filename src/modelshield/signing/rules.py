"""Integrity rules (MS8xx): ``scan --verify`` reports a model that its signature does not vouch
for as findings, so that every report format, threshold and exit code shows it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelshield.findings import Confidence, Finding, Location, Severity
from modelshield.rules.rule import Rule

if TYPE_CHECKING:  # the rule catalogue imports this module: keep cryptography out of it
    from modelshield.signing.api import VerifyResult

RULES = (
    Rule(
        "MS800",
        "signature-mismatch",
        Severity.CRITICAL,
        Confidence.HIGH,
        345,
        "The model differs from what its signature covers",
        "The signature itself verified, but files were modified, added or removed since the "
        "model was signed: this is not the model its publisher released. Do not load it; get "
        "the model again from its source.",
    ),
    Rule(
        "MS801",
        "signature-invalid",
        Severity.CRITICAL,
        Confidence.HIGH,
        347,
        "The signature does not verify",
        "The signature is malformed, was not made with the given key or a certificate chaining "
        "to the given trust roots, or is not trusted at this time. Nothing vouches for where "
        "the model comes from.",
    ),
)


def verification_findings(
    path: str, result: VerifyResult | None, error: str | None
) -> list[Finding]:
    """Findings for the outcome of verifying the model at ``path``: one per modified, added
    or missing file (located at that file, as the scan reports files), or one for a signature
    that did not verify (``error``)."""
    if result is None:
        return [RULES[1].finding(error or "the signature did not verify", Location(path))]
    changes = [
        *((f, "modified since it was signed") for f in result.modified),
        *((f, "added: not covered by the signature") for f in result.added),
        *((f, "missing: signed but not present") for f in result.missing),
    ]
    return [
        RULES[0].finding(
            f"{what} (signature by {result.signer})",
            Location(path if name == "." else f"{path.rstrip('/')}/{name}"),
        )
        for name, what in changes
    ]
