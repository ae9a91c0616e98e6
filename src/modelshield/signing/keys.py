"""Key material: elliptic-curve keys (P-256, P-384, P-521) and X.509 certificate chains.

ECDSA uses the hash matched to the curve (SHA-256, SHA-384, SHA-512), as the OpenSSF format and
the Sigstore protobuf specs require. A public key is identified in a bundle by the SHA-256 of its
PEM SubjectPublicKeyInfo encoding (the ``hint``).

Certificate chains are validated with ``cryptography``'s RFC 5280 path builder: the leaf and
intermediates from the bundle must chain to one of the trust roots the verifier supplies, each
certificate valid at the verification time (now, unless told otherwise), CA certificates marked as
such; the leaf must allow digital signatures (key usage) or code signing (extended key usage).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from modelshield.signing.errors import SigningError, VerificationError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import verification as x509v
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise SigningError(
        "signing needs the 'cryptography' package: pip install 'modelshield[signing]'"
    ) from _exc

CURVES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


def _check_curve(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> None:
    if key.curve.name not in CURVES:
        raise SigningError(f"unsupported curve {key.curve.name} (use P-256, P-384 or P-521)")


def _hash_for(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> hashes.HashAlgorithm:
    algorithm: hashes.HashAlgorithm = CURVES[key.curve.name]()
    return algorithm


def load_private_key(
    path: str | os.PathLike[str], password: bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read private key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"{path}: not a usable PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningError(f"{path}: only elliptic-curve keys are supported by the format")
    _check_curve(key)
    return key


def load_public_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read public key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningError(f"{path}: only elliptic-curve keys are supported by the format")
    _check_curve(key)
    return key


def load_certificates(paths: Sequence[str | os.PathLike[str]]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as exc:
            raise SigningError(f"cannot read certificate {p}: {exc.strerror or exc}") from exc
        try:
            found = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise SigningError(f"{p}: no PEM certificate ({exc})") from exc
        certs.extend(found)
    return certs


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(_hash_for(key)))


def verify(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    try:
        key.verify(signature, data, ec.ECDSA(_hash_for(key)))
    except InvalidSignature as exc:
        raise VerificationError(
            "the signature does not match (wrong key or altered payload)"
        ) from exc


def _can_sign(cert: x509.Certificate) -> bool:
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return ExtendedKeyUsageOID.CODE_SIGNING in eku
    except x509.ExtensionNotFound:
        return False


def verify_chain(
    chain_der: Sequence[bytes],
    roots: Sequence[x509.Certificate],
    at: datetime.datetime | None = None,
) -> x509.Certificate:
    """Validate leaf-first ``chain_der`` against ``roots``; returns the leaf certificate."""
    if not roots:
        raise SigningError("certificate verification needs at least one trust root")
    try:
        chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError as exc:
        raise VerificationError(f"bundle holds a malformed certificate: {exc}") from exc
    leaf, intermediates = chain[0], chain[1:]
    when = at or datetime.datetime.now(datetime.UTC)
    try:
        verifier = (
            x509v.PolicyBuilder()
            .store(x509v.Store(list(roots)))
            .time(when)
            .max_chain_depth(8)
            .extension_policies(
                ca_policy=x509v.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=x509v.ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        verifier.verify(leaf, intermediates)
    except (x509v.VerificationError, ValueError) as exc:
        raise VerificationError(
            f"certificate chain is not trusted at {when.isoformat(timespec='seconds')}: {exc}"
        ) from exc
    if not _can_sign(leaf):
        raise VerificationError("signing certificate is not allowed to sign (key usage)")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVES:
        raise VerificationError("signing certificate does not hold a supported EC key")
    return leaf


__all__ = [
    "CURVES",
    "PrivateKey",
    "PublicKey",
    "key_hint",
    "load_certificates",
    "load_private_key",
    "load_public_key",
    "sign",
    "verify",
    "verify_chain",
]
