"""Sign and verify models in the OpenSSF Model Signing format (``model_signing`` 1.x compatible).

Signing: hash the model (:mod:`.hashing`), wrap the manifest in an in-toto statement
(:mod:`.statement`), sign the DSSE PAE of it with an EC key, and write a Sigstore bundle v0.3
(:mod:`.bundle`) carrying either the public-key hint or the certificate chain.

Verification checks, in order, and stops at the first failure: the bundle parses; the DSSE
signature verifies with the given public key (whose hint must match, when the bundle has one) or
with the leaf of a certificate chain that validates against the given trust roots; the payload is
a model-signing statement whose subject digest matches its resources; then the model is re-hashed
with the signed serialization and compared file by file. The comparison reports every modified,
added and missing file.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelshield.signing import keys
from modelshield.signing.bundle import Bundle
from modelshield.signing.dsse import Envelope, Signature, pae
from modelshield.signing.errors import SigningError, VerificationError
from modelshield.signing.hashing import (
    DEFAULT_IGNORED,
    Manifest,
    Serialization,
    hash_model,
    normalize_ignore,
)
from modelshield.signing.statement import PAYLOAD_TYPE, encode_statement, parse_statement

PathLike = str | os.PathLike[str]


def default_signature_path(model_path: PathLike) -> Path:
    """``DIR/model.sig`` for a directory, ``FILE.sig`` for a file."""
    p = Path(model_path)
    return p / "model.sig" if p.is_dir() else p.with_name(p.name + ".sig")


def _inside(model_path: PathLike, other: PathLike) -> str | None:
    """``other`` relative to the model directory, or None when it is outside."""
    root = Path(model_path).resolve()
    if not root.is_dir():
        return None
    try:
        rel = Path(other).resolve().relative_to(root)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


@dataclass(frozen=True)
class SignResult:
    signature_path: Path
    manifest: Manifest
    signer: str


def sign_model(
    model_path: PathLike,
    signature_path: PathLike | None = None,
    *,
    private_key: PathLike,
    password: bytes | None = None,
    certificate: PathLike | None = None,
    certificate_chain: Sequence[PathLike] = (),
    ignore_paths: Sequence[PathLike] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    method: str = "files",
    hash_type: str = "sha256",
    shard_size: int | None = None,
    jobs: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SignResult:
    """Sign ``model_path`` and write the bundle to ``signature_path``.

    With ``certificate`` (the signing certificate for ``private_key``) and optionally
    ``certificate_chain`` (intermediates/root), the bundle carries the chain; otherwise it carries
    the public-key hint. The signature file, when inside the model directory, is ignored.
    """
    sig_path = Path(signature_path) if signature_path else default_signature_path(model_path)
    key = keys.load_private_key(private_key, password)
    chain_der: tuple[bytes, ...] = ()
    if certificate is not None:
        from cryptography.hazmat.primitives.serialization import Encoding

        leaf = keys.load_certificates([certificate])[0]
        if leaf.public_key() != key.public_key():
            raise SigningError("the certificate does not belong to the private key")
        rest = keys.load_certificates(list(certificate_chain))
        chain_der = tuple(c.public_bytes(Encoding.DER) for c in [leaf, *rest])
        signer = f"certificate {leaf.subject.rfc4514_string()}"
    elif certificate_chain:
        raise SigningError("a certificate chain needs the signing certificate too")
    else:
        signer = f"key {keys.key_hint(key.public_key())[:16]}"
    ignore = list(normalize_ignore(ignore_paths))
    if ignore_git_paths:
        ignore += [p for p in DEFAULT_IGNORED if p not in ignore]
    own = _inside(model_path, sig_path)
    if own and own not in ignore:
        ignore.append(own)
    try:
        ser = Serialization(
            method,
            hash_type,
            allow_symlinks,
            tuple(ignore),
            (shard_size or 1_000_000_000) if method == "shards" else None,
        )
    except ValueError as exc:
        raise SigningError(str(exc)) from exc
    manifest = hash_model(model_path, ser, jobs=jobs, progress=progress)
    payload = encode_statement(manifest)
    sig = keys.sign(key, pae(PAYLOAD_TYPE, payload))
    bundle = Bundle(
        Envelope(payload, PAYLOAD_TYPE, (Signature(sig, ""),)),
        public_key_hint=None if chain_der else keys.key_hint(key.public_key()),
        certificate_chain=chain_der,
    )
    tmp = sig_path.with_name(sig_path.name + ".tmp")
    try:
        tmp.write_text(bundle.dumps(), encoding="utf-8")
        os.replace(tmp, sig_path)
    except OSError as exc:
        raise SigningError(f"cannot write {sig_path}: {exc.strerror or exc}") from exc
    return SignResult(sig_path, manifest, signer)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify_model` once the signature itself verified."""

    signer: str
    model_name: str
    serialization: Serialization
    checked: int
    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.modified or self.added or self.missing)


def _verify_envelope(
    bundle: Bundle,
    public_key: PathLike | None,
    trust_roots: Sequence[PathLike],
    at: datetime.datetime | None,
) -> tuple[bytes, str]:
    env = bundle.envelope
    if env.payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"unexpected DSSE payloadType {env.payload_type!r}")
    if len(env.signatures) != 1:
        raise VerificationError("expected exactly one DSSE signature")
    if bundle.keyless_certificate is not None:
        raise VerificationError(
            "keyless Sigstore bundles need online Sigstore verification, which modelshield "
            "does not do; use model_signing's sigstore verifier"
        )
    signed = pae(env.payload_type, env.payload)
    if bundle.certificate_chain:
        if public_key is not None and not trust_roots:
            raise VerificationError(
                "the signature was made with a certificate; verify it with trust roots"
            )
        roots = keys.load_certificates(list(trust_roots))
        leaf = keys.verify_chain(bundle.certificate_chain, roots, at)
        pub = leaf.public_key()
        assert isinstance(pub, keys.PublicKey)
        keys.verify(pub, env.signatures[0].sig, signed)
        return env.payload, f"certificate {leaf.subject.rfc4514_string()}"
    if public_key is None:
        raise VerificationError("the signature was made with a key; verify it with --key PUBKEY")
    pub = keys.load_public_key(public_key)
    hint = keys.key_hint(pub)
    if bundle.public_key_hint is not None and bundle.public_key_hint != hint:
        raise VerificationError("the signature names another public key (key hint mismatch)")
    keys.verify(pub, env.signatures[0].sig, signed)
    return env.payload, f"key {hint[:16]}"


def _group(manifest: Manifest) -> dict[str, set[tuple[str, str]]]:
    """Per file: its (item name, digest) pairs (one for 'files', one per shard for 'shards')."""
    out: dict[str, set[tuple[str, str]]] = {}
    for r in manifest.resources:
        out.setdefault(r.path, set()).add((r.name, r.digest))
    return out


def verify_model(
    model_path: PathLike,
    signature_path: PathLike | None = None,
    *,
    public_key: PathLike | None = None,
    trust_roots: Sequence[PathLike] = (),
    at: datetime.datetime | None = None,
    ignore_paths: Sequence[PathLike] = (),
    jobs: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyResult:
    """Verify ``model_path`` against the bundle at ``signature_path``.

    Raises :class:`VerificationError` when the signature is malformed, does not verify or is not
    trusted, and :class:`SigningError` for unusable verifier inputs (keys, roots). Otherwise the
    result lists every difference between the signed manifest and the model on disk; check
    :attr:`VerifyResult.ok`. ``at`` is the time certificate chains must be valid at (default now).
    ``ignore_paths`` only excuse files that are not in the signature.
    """
    sig_path = Path(signature_path) if signature_path else default_signature_path(model_path)
    if not Path(model_path).exists():
        raise VerificationError(f"{model_path}: no such file or directory")
    try:
        raw = sig_path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read signature {sig_path}: {exc.strerror or exc}") from exc
    bundle = Bundle.loads(raw)
    payload, signer = _verify_envelope(bundle, public_key, trust_roots, at)
    expected = parse_statement(payload)
    ser = expected.serialization
    extra = list(normalize_ignore(ignore_paths))
    own = _inside(model_path, sig_path)
    if own:
        extra.append(own)
    signed_names = {r.path for r in expected.resources}
    extra = [p for p in extra if not any(n == p or n.startswith(p + "/") for n in signed_names)]
    local_ser = Serialization(
        ser.method,
        ser.hash_type,
        ser.allow_symlinks,
        tuple(dict.fromkeys([*normalize_ignore(ser.ignore_paths), *extra])),
        ser.shard_size,
    )
    try:
        actual = hash_model(model_path, local_ser, jobs=jobs, progress=progress)
    except SigningError as exc:
        raise VerificationError(f"cannot hash the model: {exc}") from exc
    want = _group(expected)
    have = _group(actual)
    added = sorted(have.keys() - want.keys())
    missing = sorted(want.keys() - have.keys())
    modified = tuple(sorted(p for p in want.keys() & have.keys() if want[p] != have[p]))
    return VerifyResult(
        signer=signer,
        model_name=expected.model_name,
        serialization=ser,
        checked=len(have),
        modified=modified,
        added=tuple(added),
        missing=tuple(missing),
    )


__all__ = [
    "SignResult",
    "VerifyResult",
    "default_signature_path",
    "sign_model",
    "verify_model",
]
