"""Backdoor checks on tiny CNNs trained on scikit-learn's digits (one seed, cached per session).

The fixtures are gated (clean accuracy, attack success) so a check that "finds" a backdoor finds
a real one. The multi-seed evaluation is ``bench/bench_backdoor.py``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from backdoor_fixtures import (  # noqa: E402
    ATTACKS,
    INPUT_SHAPE,
    NUM_CLASSES,
    TARGET_CLASS,
    Fixture,
    TinyCNN,
    train_fixture,
)

from modelshield import cli_backdoor  # noqa: E402
from modelshield.backdoor import (  # noqa: E402
    BackdoorError,
    ClassifierSpec,
    CleanseResult,
    DecisionRule,
    LabelledSet,
    encode_png,
    load_classifier,
    load_npz,
    reverse_engineer,
)
from modelshield.backdoor._deps import require_torch  # noqa: E402
from modelshield.backdoor.audit import audit_training_data  # noqa: E402
from modelshield.backdoor.cleanse import decide  # noqa: E402
from modelshield.backdoor.model import require_per_class  # noqa: E402
from modelshield.backdoor.strip import calibrate_strip  # noqa: E402
from modelshield.load import UnsafeModelError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

SPEC = ClassifierSpec(INPUT_SHAPE, (0.0, 1.0), NUM_CLASSES)
STEPS = 300


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models() -> dict[str, Fixture]:
    torch.set_num_threads(1)
    out = {attack: train_fixture(attack, seed=0) for attack in ("clean", "badnets", "blended")}
    for fx in out.values():  # gates: the fixtures are real classifiers and real backdoors
        assert fx.clean_accuracy >= 0.93, (fx.attack, fx.clean_accuracy)
        if fx.attack != "clean":
            assert fx.attack_success >= 0.8, (fx.attack, fx.attack_success)
            assert fx.poisoned.sum() > 20
    return out


@pytest.fixture(scope="session")
def cleanse(models: dict[str, Fixture]) -> dict[str, CleanseResult]:
    return {
        name: reverse_engineer(fx.model, LabelledSet(fx.x_clean, fx.y_clean), SPEC, steps=STEPS)
        for name, fx in models.items()
    }


# -- trigger reverse-engineering ---------------------------------------------------------------


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_backdoored_model_flagged_with_target(
    attack: str, cleanse: dict[str, CleanseResult]
) -> None:
    result = cleanse[attack]
    assert result.flagged, result.reason
    assert result.target == TARGET_CLASS
    trig = result.triggers[TARGET_CLASS]
    assert trig.reached and trig.attack_success >= 0.8
    assert trig.mask_fraction == min(result.mask_fractions)
    assert trig.anomaly_index == max(result.anomaly_indices)
    assert trig.mask.shape == INPUT_SHAPE[1:] and trig.pattern.shape == INPUT_SHAPE
    assert result.prescreen is not None
    assert int(np.argmax(result.prescreen.max_margin)) == TARGET_CLASS


def test_badnets_trigger_recovered_at_the_corner(cleanse: dict[str, CleanseResult]) -> None:
    mask = cleanse["badnets"].triggers[TARGET_CLASS].mask
    corner = mask[5:8, 5:8].sum()
    assert corner >= 0.5 * mask.sum()


def test_clean_model_not_flagged(cleanse: dict[str, CleanseResult]) -> None:
    result = cleanse["clean"]
    assert not result.flagged and result.target is None
    assert "not flagged" in result.reason
    assert len(result.triggers) == NUM_CLASSES
    assert all(0 < t.mask_fraction <= 1 for t in result.triggers)


def test_anomaly_index_alone_does_not_flag() -> None:
    # A tight cluster of mask sizes makes the MAD tiny: class 0 is an "outlier" by the anomaly
    # index but its mask is large in absolute terms and close to the median -> not flagged.
    sizes = np.array([0.12, 0.15, 0.151, 0.152, 0.15, 0.149, 0.15, 0.151, 0.15, 0.15])
    reached = np.ones(10, dtype=bool)
    anomaly, target, reason = decide(sizes, reached, DecisionRule(mad_floor=0.0))
    assert anomaly[0] > 2 and target is None and "fails" in reason
    sizes[3] = 0.04
    _, target, reason = decide(sizes, reached, DecisionRule())
    assert target == 3, reason
    reached[3] = False  # a mask that never reached the success rate is never the target
    _, target, _ = decide(sizes, reached, DecisionRule())
    assert target is None


# -- STRIP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_strip_catches_triggered_inputs(attack: str, models: dict[str, Fixture]) -> None:
    fx = models[attack]
    detector = calibrate_strip(fx.model, LabelledSet(fx.x_clean, fx.y_clean), SPEC, frr=0.05)
    keep = fx.y_test != TARGET_CLASS
    triggered = detector.check(ATTACKS[attack](fx.x_test[keep][:120]))
    clean = detector.check(fx.x_test[:200])
    assert triggered.flagged.mean() >= 0.5
    assert clean.flagged.mean() <= 0.15
    assert detector.threshold == pytest.approx(np.quantile(detector.clean_entropy, 0.05))


def test_strip_rejects_bad_frr(models: dict[str, Fixture]) -> None:
    fx = models["clean"]
    with pytest.raises(BackdoorError, match="false-rejection"):
        calibrate_strip(fx.model, LabelledSet(fx.x_clean, fx.y_clean), SPEC, frr=0.7)


# -- training-data audit ------------------------------------------------------------------------


def test_audit_finds_poisoned_samples(models: dict[str, Fixture]) -> None:
    fx = models["badnets"]
    audit = audit_training_data(
        fx.model,
        LabelledSet(fx.x_train, fx.y_train),
        SPEC,
        reference=LabelledSet(fx.x_clean, fx.y_clean),
    )
    assert audit.poisoned_classes == (TARGET_CLASS,)
    assert audit.feature_source == "input of head.2"
    flagged = np.zeros(len(fx.y_train), dtype=bool)
    flagged[list(audit.flagged)] = True
    assert flagged[fx.poisoned].mean() >= 0.8  # true-positive rate
    assert flagged[~fx.poisoned].mean() <= 0.02  # false-positive rate
    scores = audit.spectral_score[list(audit.flagged)]
    assert (np.diff(scores) <= 0).all()  # most suspicious first


def test_audit_clean_training_set(models: dict[str, Fixture]) -> None:
    fx = models["clean"]
    audit = audit_training_data(
        fx.model,
        LabelledSet(fx.x_train, fx.y_train),
        SPEC,
        reference=LabelledSet(fx.x_clean, fx.y_clean),
    )
    assert audit.flagged == ()
    assert all(c.reference_share is not None for c in audit.classes)


# -- loading ------------------------------------------------------------------------------------


def test_load_safetensors_and_torchscript(tmp_path: Path, models: dict[str, Fixture]) -> None:
    from safetensors.torch import save_file

    fx = models["badnets"]
    save_file(fx.model.state_dict(), str(tmp_path / "w.safetensors"))
    torch.jit.script(fx.model).save(str(tmp_path / "m.pt"))
    x = torch.from_numpy(fx.x_test[:16])
    want = fx.model(x)
    a = load_classifier(tmp_path / "w.safetensors", architecture="backdoor_fixtures:TinyCNN")
    b = load_classifier(tmp_path / "m.pt")
    assert isinstance(a, TinyCNN) and not a.training
    assert torch.allclose(a(x), want) and torch.allclose(b(x), want)
    assert all(not p.requires_grad for p in a.parameters())


def test_flagged_model_file_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("echo pwned",))

    bad = tmp_path / "w.safetensors"
    bad.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(UnsafeModelError):
        load_classifier(bad, architecture="backdoor_fixtures:TinyCNN")
    with pytest.raises(UnsafeModelError):
        load_classifier(bad)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BackdoorError, match="no such file"):
        load_classifier(tmp_path / "missing.pt")
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(TinyCNN().state_dict(), str(weights))
    with pytest.raises(BackdoorError, match=r"pkg\.module:ClassName"):
        load_classifier(weights, architecture="backdoor_fixtures.TinyCNN")
    with pytest.raises(BackdoorError, match="cannot import"):
        load_classifier(weights, architecture="backdoor_fixtures:Nope")
    with pytest.raises(BackdoorError, match="cannot load weights"):
        load_classifier(
            weights, architecture="backdoor_fixtures:TinyCNN", arch_kwargs={"num_classes": 3}
        )


def test_npz_validation(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((30, 1, 8, 8), np.float32), y=np.arange(30) % 10)
    data = load_npz(p, SPEC)
    assert data.x.shape == (30, 1, 8, 8) and data.y.dtype == np.int64
    with pytest.raises(BackdoorError, match="fewer than 5"):
        require_per_class(data, SPEC, "d.npz")
    np.savez(p, x=np.full((30, 1, 8, 8), 2.0, np.float32), y=np.arange(30) % 10)
    with pytest.raises(BackdoorError, match="value range"):
        load_npz(p, SPEC)
    np.savez(p, x=np.zeros((30, 8, 8), np.float32), y=np.arange(30) % 10)
    with pytest.raises(BackdoorError, match="shape"):
        load_npz(p, SPEC)
    np.savez(p, x=np.zeros((30, 1, 8, 8), np.float32))
    with pytest.raises(BackdoorError, match="'y'"):
        load_npz(p, SPEC)
    assert len(load_npz(p, SPEC, labels=False).x) == 30
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(BackdoorError):
        load_npz(tmp_path / "obj.npy", SPEC)


def test_missing_torch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackdoorError, match=r"modelshield\[backdoor\]"):
        require_torch()


def test_spec_validation() -> None:
    with pytest.raises(BackdoorError):
        ClassifierSpec((8, 8), (0.0, 1.0), 10)
    with pytest.raises(BackdoorError):
        ClassifierSpec((1, 8, 8), (1.0, 0.0), 10)


# -- PNG ----------------------------------------------------------------------------------------


def _decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    return width, height, colour, zlib.decompress(idat)


def test_png_greyscale_and_rgb() -> None:
    grey = np.array([[0.0, 1.0], [0.5, 2.0]], dtype=np.float32)
    w, h, colour, raw = _decode_png(encode_png(grey, scale=2))
    assert (w, h, colour) == (4, 4, 0)
    rows = [raw[i * 5 : (i + 1) * 5] for i in range(4)]
    assert all(r[0] == 0 for r in rows)
    assert rows[0][1:] == bytes([0, 0, 255, 255]) and rows[3][1:] == bytes([128, 128, 255, 255])
    rgb = np.zeros((3, 1, 2), dtype=np.uint8)
    rgb[0, 0, 1] = 200
    w, h, colour, raw = _decode_png(encode_png(rgb))
    assert (w, h, colour) == (2, 1, 2) and raw == bytes([0, 0, 0, 0, 200, 0, 0])
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 4, 4)))


# -- CLI ----------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_backdoor.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_end_to_end(
    tmp_path: Path, models: dict[str, Fixture], capsys: pytest.CaptureFixture[str]
) -> None:
    fx = models["badnets"]
    torch.jit.script(fx.model).save(str(tmp_path / "m.pt"))
    np.savez(tmp_path / "clean.npz", x=fx.x_clean, y=fx.y_clean)
    np.savez(tmp_path / "train.npz", x=fx.x_train, y=fx.y_train)
    keep = fx.y_test != TARGET_CLASS
    np.savez(tmp_path / "check.npz", x=ATTACKS["badnets"](fx.x_test[keep][:20]))
    out = tmp_path / "out"
    args = _cli(
        [
            "backdoor",
            str(tmp_path / "m.pt"),
            "--input-shape", "1,8,8",
            "--value-range", "0,1",
            "--num-classes", "10",
            "--clean", str(tmp_path / "clean.npz"),
            "--train", str(tmp_path / "train.npz"),
            "--check", str(tmp_path / "check.npz"),
            "--steps", str(STEPS),
            "--out-dir", str(out),
            "--threads", "1",
        ]
    )  # fmt: skip
    assert cli_backdoor.run(args) == cli_backdoor.EXIT_SUSPICIOUS
    text = capsys.readouterr().out
    assert "backdoor suspected: class 7" in text
    report = json.loads((out / "report.json").read_text())
    assert report["trigger_search"]["target_class"] == TARGET_CLASS
    assert len(report["trigger_search"]["classes"]) == NUM_CLASSES
    assert report["audit"]["poisoned_classes"] == [TARGET_CLASS]
    assert report["audit"]["classes"][0]["reference_share"] is not None
    assert len(report["strip"]["flagged"]) >= 10
    assert report["audit"]["feature_source"] == "logits"  # TorchScript: no hook
    png = (out / f"trigger_class{TARGET_CLASS}.png").read_bytes()
    assert _decode_png(png)[:3] == (128, 128, 0)
    mask = np.load(out / f"mask_class{TARGET_CLASS}.npy")
    pattern = np.load(out / f"pattern_class{TARGET_CLASS}.npy")
    assert mask.shape == (8, 8) and pattern.shape == (1, 8, 8)


def test_cli_errors(tmp_path: Path) -> None:
    from modelshield.errors import ModelShieldError

    np.savez(tmp_path / "clean.npz", x=np.zeros((5, 1, 8, 8), np.float32), y=np.arange(5))
    from safetensors.torch import save_file

    save_file(TinyCNN().state_dict(), str(tmp_path / "w.safetensors"))
    base = ["backdoor", str(tmp_path / "w.safetensors"), "--arch", "backdoor_fixtures:TinyCNN"]
    common = [
        "--input-shape",
        "1,8,8",
        "--num-classes",
        "10",
        "--clean",
        str(tmp_path / "clean.npz"),
    ]
    with pytest.raises(ModelShieldError, match="fewer than 5"):
        cli_backdoor.run(_cli(base + common))
    with pytest.raises(ModelShieldError, match="--frr"):
        cli_backdoor.run(_cli([*base, *common, "--frr", "0.9"]))
    with pytest.raises(SystemExit):
        _cli([*base, "--input-shape", "a,b", "--num-classes", "10", "--clean", "x"])
