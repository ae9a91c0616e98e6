"""Sign/verify round trips, tamper detection, certificate chains, CLI, and interoperability in
both directions with the real ``model_signing`` package (a test dependency)."""

from __future__ import annotations

import argparse
import base64
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelshield import cli_integrity
from modelshield.signing import SigningError, VerificationError, sign_model, verify_model

model_signing = pytest.importorskip("model_signing")

NOW = datetime.datetime.now(datetime.UTC)


# ------------------------------------------------------------------------------ fixtures


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> tuple[Path, Path]:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub = path.with_suffix(".pub")
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, pub


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    key: ec.EllipticCurvePrivateKey,
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    ca: bool,
    start: datetime.datetime,
    days: int,
    can_sign: bool = True,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if subject != issuer:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    b = b.add_extension(
        x509.KeyUsage(
            digital_signature=not ca and can_sign,
            content_commitment=False,
            key_encipherment=not ca and not can_sign,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    if not ca and can_sign:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class PKI:
    root: Path
    inter: Path
    leaf: Path
    leaf_key: Path
    other_root: Path
    expired_leaf: Path
    expired_key: Path
    nosign_leaf: Path
    nosign_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    start = NOW - datetime.timedelta(days=1)
    rk = ec.generate_private_key(ec.SECP384R1())
    ik = ec.generate_private_key(ec.SECP256R1())
    lk = ec.generate_private_key(ec.SECP256R1())
    ok = ec.generate_private_key(ec.SECP256R1())
    ek = ec.generate_private_key(ec.SECP256R1())
    nk = ec.generate_private_key(ec.SECP256R1())
    root = _cert(rk, "Test Root", rk, "Test Root", ca=True, start=start, days=3650)
    inter = _cert(ik, "Test Inter", rk, "Test Root", ca=True, start=start, days=365)
    leaf = _cert(lk, "Model Publisher", ik, "Test Inter", ca=False, start=start, days=30)
    other = _cert(ok, "Other Root", ok, "Other Root", ca=True, start=start, days=3650)
    old = NOW - datetime.timedelta(days=100)
    expired = _cert(ek, "Expired Publisher", ik, "Test Inter", ca=False, start=old, days=10)
    nosign = _cert(nk, "No Sign", ik, "Test Inter", ca=False, start=start, days=30, can_sign=False)
    return PKI(
        root=_pem(root, d / "root.pem"),
        inter=_pem(inter, d / "inter.pem"),
        leaf=_pem(leaf, d / "leaf.pem"),
        leaf_key=_write_key(lk, d / "leaf.key")[0],
        other_root=_pem(other, d / "other.pem"),
        expired_leaf=_pem(expired, d / "expired.pem"),
        expired_key=_write_key(ek, d / "expired.key")[0],
        nosign_leaf=_pem(nosign, d / "nosign.pem"),
        nosign_key=_write_key(nk, d / "nosign.key")[0],
    )


@pytest.fixture(scope="module", params=["p256", "p384"])
def ec_keys(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    curve = ec.SECP256R1() if request.param == "p256" else ec.SECP384R1()
    return _write_key(ec.generate_private_key(curve), tmp_path_factory.mktemp("k") / "key.pem")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: main\n")
    (root / "config.json").write_text('{"model_type": "bert"}')
    (root / "weights" / "part-0.bin").write_bytes(bytes(range(256)) * 64)
    (root / "weights" / "part-1.bin").write_bytes(b"\x01" * 5000)
    (root / "tokenizer.json").write_text("{}")
    return root


def _ms_key_verify(model: Path, sig: Path, pub: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, sig)


def _ms_hashing(sig_name: str) -> object:
    return model_signing.hashing.Config().set_ignored_paths(paths=[sig_name])


# ---------------------------------------------------------------------------- round trips


def test_roundtrip_directory(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    res = sign_model(model, private_key=key)
    assert res.signature_path == model / "model.sig"
    assert "model.sig" in res.manifest.serialization.ignore_paths
    out = verify_model(model, public_key=pub)
    assert out.ok and out.checked == 4 and out.model_name == "model"


def test_roundtrip_file_and_shards(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    f = model / "weights" / "part-0.bin"
    res = sign_model(f, private_key=key)
    assert res.signature_path == f.with_name("part-0.bin.sig")
    assert verify_model(f, public_key=pub).ok
    sig = model.parent / "sharded.sig"
    sign_model(model, sig, private_key=key, method="shards", shard_size=4096)
    assert verify_model(model, sig, public_key=pub).ok
    f.write_bytes(f.read_bytes()[:-1])  # size change: a different set of shards
    assert verify_model(model, sig, public_key=pub).modified == ("weights/part-0.bin",)


# ------------------------------------------------------------------------------ tampering


def test_tamper_modified_added_missing(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    sign_model(model, private_key=key)
    (model / "config.json").write_text('{"model_type": "evil"}')
    (model / "weights" / "part-1.bin").unlink()
    (model / "extra.py").write_text("import os")
    (model / ".git" / "ORIG_HEAD").write_text("ignored")
    out = verify_model(model, public_key=pub)
    assert not out.ok
    assert out.modified == ("config.json",)
    assert out.missing == ("weights/part-1.bin",)
    assert out.added == ("extra.py",)
    assert verify_model(model, public_key=pub, ignore_paths=["extra.py"]).added == ()


def test_tampered_signature_fails(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    sig = sign_model(model, private_key=key).signature_path
    bundle = json.loads(sig.read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match="does not match"):
        verify_model(model, public_key=pub)
    sig.write_text("{not json")
    with pytest.raises(VerificationError):
        verify_model(model, public_key=pub)
    sig.unlink()
    with pytest.raises(VerificationError, match="cannot read signature"):
        verify_model(model, public_key=pub)


def test_wrong_key_fails(model: Path, ec_keys: tuple[Path, Path], tmp_path: Path) -> None:
    key, _ = ec_keys
    sign_model(model, private_key=key)
    _, other_pub = _write_key(ec.generate_private_key(ec.SECP256R1()), tmp_path / "o.pem")
    with pytest.raises(VerificationError, match="another public key"):
        verify_model(model, public_key=other_pub)
    # without the hint the signature check itself must fail
    sig = model / "model.sig"
    bundle = json.loads(sig.read_text())
    bundle["verificationMaterial"]["publicKey"] = {}
    sig.write_text(json.dumps(bundle))
    with pytest.raises(VerificationError, match="signature does not match"):
        verify_model(model, public_key=other_pub)


# -------------------------------------------------------------------- certificate chains


def test_certificate_chain_roundtrip_and_failures(model: Path, pki: PKI) -> None:
    sign_model(model, private_key=pki.leaf_key, certificate=pki.leaf, certificate_chain=[pki.inter])
    out = verify_model(model, trust_roots=[pki.root])
    assert out.ok and "Model Publisher" in out.signer
    with pytest.raises(VerificationError, match="not trusted"):
        verify_model(model, trust_roots=[pki.other_root])
    with pytest.raises(VerificationError, match="not trusted"):
        verify_model(model, trust_roots=[pki.root], at=NOW + datetime.timedelta(days=60))
    with pytest.raises(VerificationError, match="with trust roots"):
        verify_model(model, public_key=pki.root)


def test_expired_and_non_signing_certificates(model: Path, pki: PKI) -> None:
    sig = model.parent / "exp.sig"
    sign_model(
        model,
        sig,
        private_key=pki.expired_key,
        certificate=pki.expired_leaf,
        certificate_chain=[pki.inter],
    )
    with pytest.raises(VerificationError, match="not trusted"):
        verify_model(model, sig, trust_roots=[pki.root])
    # valid at a time inside its validity period
    at = NOW - datetime.timedelta(days=95)
    with pytest.raises(VerificationError, match="not trusted"):
        verify_model(model, sig, trust_roots=[pki.root], at=at)  # the CA did not exist yet
    sig2 = model.parent / "nosign.sig"
    sign_model(
        model,
        sig2,
        private_key=pki.nosign_key,
        certificate=pki.nosign_leaf,
        certificate_chain=[pki.inter],
    )
    with pytest.raises(VerificationError, match="not allowed to sign"):
        verify_model(model, sig2, trust_roots=[pki.root])


def test_certificate_must_match_key(model: Path, pki: PKI) -> None:
    with pytest.raises(SigningError, match="does not belong"):
        sign_model(model, private_key=pki.nosign_key, certificate=pki.leaf)


# ------------------------------------------------------------------- model_signing interop


def test_interop_key_ours_to_model_signing(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    sig = sign_model(model, private_key=key).signature_path
    _ms_key_verify(model, sig, pub)
    f = model / "config.json"
    fsig = sign_model(f, model.parent / "f.sig", private_key=key).signature_path
    _ms_key_verify(f, fsig, pub)
    (model / "tokenizer.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="Hash mismatch"):
        _ms_key_verify(model, sig, pub)


def test_interop_key_model_signing_to_ours(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    sig = model / "model.sig"
    (
        model_signing.signing.Config()
        .set_hashing_config(_ms_hashing("model.sig"))
        .use_elliptic_key_signer(private_key=key)
        .sign(model, sig)
    )
    assert verify_model(model, sig, public_key=pub).ok
    f = model / "config.json"
    fsig = model.parent / "f.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key).sign(f, fsig)
    assert verify_model(f, fsig, public_key=pub).ok
    (model / "weights" / "part-1.bin").write_bytes(b"\x02" * 5000)
    assert verify_model(model, sig, public_key=pub).modified == ("weights/part-1.bin",)


def test_interop_shards_model_signing_to_ours(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    sig = model.parent / "s.sig"
    hashing = model_signing.hashing.Config().use_shard_serialization(shard_size=4096)
    (
        model_signing.signing.Config()
        .set_hashing_config(hashing)
        .use_elliptic_key_signer(private_key=key)
        .sign(model, sig)
    )
    assert verify_model(model, sig, public_key=pub).ok
    ours = model.parent / "o.sig"
    sign_model(model, ours, private_key=key, method="shards", shard_size=4096)
    _ms_key_verify(model, ours, pub)


def test_interop_blake3_both_ways(model: Path, ec_keys: tuple[Path, Path]) -> None:
    """BLAKE3 manifests (``--hash blake3``, ~3x faster than SHA-256) verify with model_signing
    and model_signing's verify with us; a changed file fails both."""
    key, pub = ec_keys
    ours = model.parent / "o.sig"
    res = sign_model(model, ours, private_key=key, hash_type="blake3")
    assert {r.algorithm for r in res.manifest.resources} == {"blake3"}
    _ms_key_verify(model, ours, pub)
    theirs = model.parent / "t.sig"
    (
        model_signing.signing.Config()
        .set_hashing_config(
            model_signing.hashing.Config().use_file_serialization(hashing_algorithm="blake3")
        )
        .use_elliptic_key_signer(private_key=key)
        .sign(model, theirs)
    )
    assert verify_model(model, theirs, public_key=pub).ok
    (model / "config.json").write_text('{"changed": true}')
    assert verify_model(model, theirs, public_key=pub).modified == ("config.json",)
    with pytest.raises(ValueError, match="Hash mismatch"):
        _ms_key_verify(model, ours, pub)


def test_interop_certificate_both_ways(model: Path, pki: PKI) -> None:
    sig = sign_model(
        model, private_key=pki.leaf_key, certificate=pki.leaf, certificate_chain=[pki.inter]
    ).signature_path
    (
        model_signing.verifying.Config()
        .use_certificate_verifier(certificate_chain=[pki.root])
        .verify(model, sig)
    )
    theirs = model.parent / "theirs.sig"
    (
        model_signing.signing.Config()
        .use_certificate_signer(
            private_key=pki.leaf_key, signing_certificate=pki.leaf, certificate_chain=[pki.inter]
        )
        .sign(model, theirs)
    )
    assert verify_model(model, theirs, trust_roots=[pki.root], ignore_paths=["model.sig"]).ok
    with pytest.raises(VerificationError):
        verify_model(model, theirs, trust_roots=[pki.other_root])


# -------------------------------------------------------------------------------- the CLI


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="modelshield")
    sub = parser.add_subparsers(dest="command")
    cli_integrity.add_parsers(sub)
    return cli_integrity.run(parser.parse_args(list(argv)))


def test_cli_sign_verify(
    model: Path, ec_keys: tuple[Path, Path], pki: PKI, capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = ec_keys
    assert _cli("sign", str(model), "--key", str(key)) == 0
    assert "signed" in capsys.readouterr().out
    assert _cli("verify", str(model), "--key", str(pub)) == 0
    assert "verified" in capsys.readouterr().out
    (model / "config.json").write_text("{}")
    assert _cli("verify", str(model), "--key", str(pub), "--json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is False and doc["modified"] == ["config.json"]
    assert _cli("verify", str(model)) == 2  # neither key nor trust root
    assert _cli("verify", str(model), "--key", str(model / "nope.pub")) == 2
    assert _cli("verify", str(model), "-s", str(model / "nope.sig"), "--key", str(pub)) == 1
    assert _cli("sign", str(model), "--key", str(model / "config.json")) == 2
    sig = model.parent / "c.sig"
    assert (
        _cli(
            "sign",
            str(model),
            "-s",
            str(sig),
            "--key",
            str(pki.leaf_key),
            "--cert",
            str(pki.leaf),
            "--chain",
            str(pki.inter),
        )
        == 0
    )
    assert _cli("verify", str(model), "-s", str(sig), "--trust-root", str(pki.root)) == 0
    assert (
        _cli(
            "verify",
            str(model),
            "-s",
            str(sig),
            "--trust-root",
            str(pki.root),
            "--at",
            "2000-01-01T00:00:00",
        )
        == 1
    )


# ------------------------------------------------------------------------ scan --verify


def _scan(*argv: str) -> int:
    from modelshield.cli import main

    return main(["scan", "--no-config", "-q", *argv])


def test_scan_verify_clean_and_signed(
    model: Path, ec_keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = ec_keys
    sign_model(model, private_key=key)
    assert _scan(str(model), "--verify", "--key", str(pub)) == 0
    err = capsys.readouterr().err
    assert "signature verified: 4 files" in err


def test_scan_verify_reports_each_changed_file(
    model: Path, ec_keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = ec_keys
    sig = sign_model(model, model.parent / "m.sig", private_key=key).signature_path
    (model / "config.json").write_text('{"model_type": "evil"}')
    (model / "tokenizer.json").unlink()
    (model / "extra.py").write_text("print('hi')\n")
    assert _scan(str(model), "--verify", str(sig), "--key", str(pub), "-f", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    got = {(f["rule_id"], Path(f["location"]["path"]).name) for f in doc["findings"]}
    assert {("MS800", "config.json"), ("MS800", "tokenizer.json"), ("MS800", "extra.py")} <= got


def test_scan_verify_fails_closed_on_a_bad_signature(
    model: Path, ec_keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = ec_keys
    sign_model(model, private_key=key)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong = tmp_path / "wrong.pub"
    wrong.write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert _scan(str(model), "--verify", "--key", str(wrong), "-f", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert [f["rule_id"] for f in doc["findings"]] == ["MS801"]
    assert _scan(str(model), "--verify", str(tmp_path / "none.sig"), "--key", str(wrong)) == 1


def test_scan_verify_and_a_malicious_pickle(
    model: Path, ec_keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signed model can still be malicious: both checks run and both are reported."""
    import pickle
    import shlex

    key, pub = ec_keys
    marker = tmp_path / "marker"
    payload = b"cos\nsystem\n(V" + f"touch {shlex.quote(str(marker))}".encode() + b"\ntR."
    pickle.loads(payload)  # the real loader runs it (harmless: creates the marker)
    assert marker.exists()
    (model / "weights" / "model.pkl").write_bytes(payload)
    sign_model(model, private_key=key)
    assert _scan(str(model), "--verify", "--key", str(pub), "-f", "json") == 1
    out = capsys.readouterr()
    assert "signature verified" in out.err
    assert {f["rule_id"] for f in json.loads(out.out)["findings"]} == {"MS101"}


def test_scan_verify_usage_errors(model: Path, ec_keys: tuple[Path, Path]) -> None:
    key, pub = ec_keys
    sign_model(model, private_key=key)
    assert _scan(str(model), "--verify") == 2  # neither key nor trust root
    assert _scan(str(model), str(model), "--verify", "--key", str(pub)) == 2  # two paths
    assert _scan(str(model), "--key", str(pub)) == 2  # --key without --verify
    assert _scan(str(model), "--verify", "--key", str(model / "none.pub")) == 2
