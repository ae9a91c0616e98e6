"""The signed payload: an in-toto Statement v1 with the model signing predicate.

```
{"_type": "https://in-toto.io/Statement/v1",
 "subject": [{"name": MODEL_NAME, "digest": {"sha256": ROOT_DIGEST}}],
 "predicateType": "https://model_signing/signature/v1.0",
 "predicate": {"serialization": {...}, "resources": [{"name", "algorithm", "digest"}, ...]}}
```
``ROOT_DIGEST`` is SHA-256 over the raw resource digests in the order they are listed. Parsing is
strict: anything unexpected is a :class:`VerificationError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from modelshield.signing.errors import VerificationError
from modelshield.signing.hashing import Manifest, Resource, Serialization

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
PREDICATE_TYPE_V01 = "https://model_signing/Digests/v0.1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

_HEX = re.compile(r"[0-9a-f]+")


def build_statement(manifest: Manifest) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest.model_name, "digest": {"sha256": manifest.root_digest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": manifest.serialization.to_json(),
            "resources": [
                {"name": r.name, "algorithm": r.algorithm, "digest": r.digest}
                for r in manifest.resources
            ],
        },
    }


def encode_statement(manifest: Manifest) -> bytes:
    return json.dumps(build_statement(manifest), indent=2, ensure_ascii=False).encode("utf-8")


def _check_name(name: str, sharded: bool) -> None:
    path = name.rsplit(":", 2)[0] if sharded else name
    if sharded:
        parts = name.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise VerificationError(f"malformed shard resource name {name!r}")
        if int(parts[1]) >= int(parts[2]):
            raise VerificationError(f"malformed shard range in {name!r}")
    if path == ".":
        return
    comps = path.split("/")
    if not path or path.startswith("/") or any(c in ("", ".", "..") for c in comps) or "\0" in path:
        raise VerificationError(f"unsafe or malformed resource name {name!r}")


def parse_statement(payload: bytes) -> Manifest:
    """Decode and check a statement; returns the signed manifest."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(f"payload is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise VerificationError("payload is not a JSON object")
    if doc.get("_type") != STATEMENT_TYPE:
        raise VerificationError(f"not an in-toto Statement v1 (_type={doc.get('_type')!r})")
    ptype = doc.get("predicateType")
    if ptype == PREDICATE_TYPE_V01:
        raise VerificationError(
            "pre-1.0 model_signing signature (predicate v0.1) is not supported; re-sign the model"
        )
    if ptype != PREDICATE_TYPE:
        raise VerificationError(f"unexpected predicateType {ptype!r}")
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise VerificationError("statement must have exactly one subject")
    subject = subjects[0]
    name = subject.get("name")
    digest = subject.get("digest")
    if not isinstance(name, str) or not isinstance(digest, dict):
        raise VerificationError("malformed subject")
    expected_root = digest.get("sha256")
    if not isinstance(expected_root, str):
        raise VerificationError("subject has no sha256 digest")
    predicate = doc.get("predicate")
    if not isinstance(predicate, dict):
        raise VerificationError("statement has no predicate")
    try:
        ser = Serialization.from_json(predicate.get("serialization"))
    except ValueError as exc:
        raise VerificationError(f"bad serialization: {exc}") from exc
    raw = predicate.get("resources")
    if not isinstance(raw, list):
        raise VerificationError("predicate.resources is not a list")
    sharded = ser.method == "shards"
    resources: list[Resource] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise VerificationError("resource is not an object")
        rname, alg, dig = item.get("name"), item.get("algorithm"), item.get("digest")
        if not (isinstance(rname, str) and isinstance(alg, str) and isinstance(dig, str)):
            raise VerificationError("resource needs string name, algorithm and digest")
        if alg != ser.algorithm:
            raise VerificationError(
                f"resource {rname!r} uses {alg!r}, serialization says {ser.algorithm!r}"
            )
        if not _HEX.fullmatch(dig) or len(dig) % 2:
            raise VerificationError(f"resource {rname!r}: digest is not lowercase hex")
        _check_name(rname, sharded)
        if rname in seen:
            raise VerificationError(f"duplicate resource {rname!r}")
        seen.add(rname)
        resources.append(Resource(rname, alg, dig))
    manifest = Manifest(name, tuple(resources), ser)
    if manifest.root_digest() != expected_root.lower():
        raise VerificationError("subject digest does not match the listed resources")
    return manifest


__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "build_statement",
    "encode_statement",
    "parse_statement",
]
