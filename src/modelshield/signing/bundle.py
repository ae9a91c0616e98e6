"""Sigstore bundle v0.3 (JSON) as used by OpenSSF Model Signing for offline signatures.

```
{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
 "verificationMaterial": {
     "publicKey": {"hint": SHA256_HEX_OF_PEM_SPKI}                # key signing, or
     "x509CertificateChain": {"certificates": [{"rawBytes": B64_DER}, ...]}   # leaf first
     "tlogEntries": []},
 "dsseEnvelope": {...}}
```
Keyless bundles (a Fulcio ``certificate`` plus transparency-log entries) are read but need online
trust roots to verify, which this offline implementation does not do: they are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelshield.signing.dsse import Envelope, b64decode, b64encode
from modelshield.signing.errors import VerificationError

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
MAX_BUNDLE_BYTES = 64 << 20


@dataclass(frozen=True)
class Bundle:
    envelope: Envelope
    public_key_hint: str | None = None
    certificate_chain: tuple[bytes, ...] = ()
    """DER certificates, leaf first."""
    keyless_certificate: bytes | None = None
    tlog_entries: int = 0

    def to_json(self) -> dict[str, Any]:
        material: dict[str, Any] = {}
        if self.certificate_chain:
            material["x509CertificateChain"] = {
                "certificates": [{"rawBytes": b64encode(c)} for c in self.certificate_chain]
            }
        else:
            material["publicKey"] = {"hint": self.public_key_hint or ""}
        material["tlogEntries"] = []
        return {
            "mediaType": MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": self.envelope.to_json(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, data: bytes) -> Bundle:
        if len(data) > MAX_BUNDLE_BYTES:
            raise VerificationError("signature file is implausibly large")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise VerificationError(f"signature is not a JSON Sigstore bundle: {exc}") from exc
        if not isinstance(doc, dict):
            raise VerificationError("signature is not a JSON object")
        if doc.get("mediaType") != MEDIA_TYPE:
            raise VerificationError(
                f"unsupported bundle mediaType {doc.get('mediaType')!r} (expected {MEDIA_TYPE})"
            )
        if "messageSignature" in doc:
            raise VerificationError("bundle signs a message digest, not a DSSE envelope")
        envelope = Envelope.from_json(doc.get("dsseEnvelope"))
        vm = doc.get("verificationMaterial")
        if not isinstance(vm, dict):
            raise VerificationError("bundle has no verificationMaterial")
        tlog = vm.get("tlogEntries", [])
        if not isinstance(tlog, list):
            raise VerificationError("verificationMaterial.tlogEntries is not a list")
        kinds = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in vm]
        if len(kinds) != 1:
            raise VerificationError(
                "verificationMaterial must hold exactly one of publicKey, "
                "x509CertificateChain, certificate"
            )
        kind = kinds[0]
        if kind == "publicKey":
            pk = vm["publicKey"]
            if not isinstance(pk, dict):
                raise VerificationError("malformed publicKey")
            hint = pk.get("hint")
            if hint is not None and not isinstance(hint, str):
                raise VerificationError("publicKey.hint is not a string")
            return cls(envelope, public_key_hint=hint or None, tlog_entries=len(tlog))
        if kind == "x509CertificateChain":
            chain = vm["x509CertificateChain"]
            certs = chain.get("certificates") if isinstance(chain, dict) else None
            if not isinstance(certs, list) or not certs:
                raise VerificationError("x509CertificateChain has no certificates")
            ders: list[bytes] = []
            for c in certs:
                if not isinstance(c, dict):
                    raise VerificationError("malformed certificate entry")
                ders.append(b64decode(c.get("rawBytes"), "certificate rawBytes"))
            return cls(envelope, certificate_chain=tuple(ders), tlog_entries=len(tlog))
        cert = vm["certificate"]
        if not isinstance(cert, dict):
            raise VerificationError("malformed certificate")
        der = b64decode(cert.get("rawBytes"), "certificate rawBytes")
        return cls(envelope, keyless_certificate=der, tlog_entries=len(tlog))


__all__ = ["MEDIA_TYPE", "Bundle"]
