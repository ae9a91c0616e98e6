"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1.0.0)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from modelshield.signing.errors import VerificationError


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-Authentication Encoding: what is actually signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


_B64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def b64decode(text: object, what: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, as protobuf JSON accepts)."""
    if not isinstance(text, str) or not _B64.fullmatch(text):
        raise VerificationError(f"{what} is not base64")
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not valid base64") from exc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Signature:
    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": b64encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"sig": b64encode(s.sig), "keyid": s.keyid} for s in self.signatures],
        }

    @classmethod
    def from_json(cls, obj: object) -> Envelope:
        if not isinstance(obj, dict):
            raise VerificationError("dsseEnvelope is not an object")
        ptype = obj.get("payloadType")
        if not isinstance(ptype, str):
            raise VerificationError("dsseEnvelope.payloadType missing")
        payload = b64decode(obj.get("payload"), "dsseEnvelope.payload")
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise VerificationError("dsseEnvelope has no signatures")
        out: list[Signature] = []
        for s in sigs:
            if not isinstance(s, dict):
                raise VerificationError("malformed DSSE signature")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str):
                raise VerificationError("DSSE keyid is not a string")
            out.append(Signature(b64decode(s.get("sig"), "DSSE signature"), keyid))
        return cls(payload, ptype, tuple(out))


__all__ = ["Envelope", "Signature", "b64decode", "b64encode", "pae"]
