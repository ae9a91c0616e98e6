"""TensorFlow checks (MS310, MS311): SavedModels, frozen graphs and keras_metadata.pb.

TensorFlow is not installed: samples are protobufs written field by field (keras_recipes), and
the real SavedModels of the corpus (MODELSHIELD_CORPUS) must scan without HIGH findings.
"""

from __future__ import annotations

import base64
import csv
import os
from pathlib import Path

import pytest
from keras_recipes import (
    attr_s,
    benign_graph,
    function_def,
    graph_def,
    keras_metadata,
    node,
    saved_model,
)

from modelshield import CoverageStatus, ScanResult, Severity, scan, scan_bytes
from modelshield.checks import tensorflow as tf_check
from modelshield.checks.context import Probe


def _rules(res: ScanResult, minimum: Severity = Severity.LOW) -> dict[str, Severity]:
    out: dict[str, Severity] = {}
    for f in res.findings:
        if f.severity >= minimum:
            out[f.rule_id] = max(out.get(f.rule_id, f.severity), f.severity)
    return out


def _fmt(res: ScanResult) -> dict[str, CoverageStatus]:
    return {c.format: c.status for c in res.coverage}


def test_benign_saved_model_and_frozen_graph_are_clean() -> None:
    sm = scan_bytes(saved_model(benign_graph()), "saved_model.pb")
    assert _rules(sm) == {}, sm.findings
    assert _fmt(sm) == {"tf-saved-model": CoverageStatus.SCANNED}
    infos = [f for f in sm.findings if f.rule_id == "MS310"]
    assert infos and all(f.severity is Severity.INFO for f in infos)
    inventory = next(f for f in sm.findings if f.rule_id == "MS311")
    assert "MatMul" in inventory.message and "3 library functions" in inventory.message

    # The same graph without a SavedModel around it, under an unhelpful name.
    fg = scan_bytes(benign_graph(), "frozen")
    assert _rules(fg) == {}
    assert _fmt(fg) == {"tf-graph": CoverageStatus.SCANNED}


@pytest.mark.parametrize(
    ("op", "severity"),
    [
        ("PyFunc", Severity.CRITICAL),
        ("EagerPyFunc", Severity.CRITICAL),
        ("WriteFile", Severity.HIGH),
        ("ReadFile", Severity.MEDIUM),
        ("MatchingFiles", Severity.MEDIUM),
        ("DataServiceDatasetV4", Severity.HIGH),
    ],
)
def test_dangerous_ops_in_graph_and_functions(op: str, severity: Severity) -> None:
    top = graph_def([node("x", "Placeholder"), node("evil", op, "x")])
    assert _rules(scan_bytes(saved_model(top), "saved_model.pb"))["MS310"] is severity
    fn = function_def("__inference_call_7", [node("evil", op)])
    hidden = graph_def([node("x", "Placeholder")], [fn])
    res = scan_bytes(saved_model(hidden), "saved_model.pb")
    assert _rules(res)["MS310"] is severity
    assert any("__inference_call_7" in f.message for f in res.findings if f.rule_id == "MS310")


def test_read_then_write_file_exfiltration_graph() -> None:
    g = graph_def(
        [
            node("path", "Const"),
            node("secret", "ReadFile", "path"),
            node("dest", "Const"),
            node("leak", "WriteFile", "dest", "secret"),
        ]
    )
    res = scan_bytes(g, "model.pb")
    msgs = " ".join(f.message for f in res.findings)
    assert _rules(res)["MS310"] is Severity.HIGH
    assert "ReadFile" in msgs and "WriteFile" in msgs


def test_saver_ops_outside_the_saver_are_high() -> None:
    g = graph_def([node("x", "Placeholder"), node("serving/SaveV2", "SaveV2", "x")])
    assert _rules(scan_bytes(saved_model(g), "saved_model.pb"))["MS310"] is Severity.HIGH
    fn = function_def("__inference_serve_3", [node("MergeV2Checkpoints", "MergeV2Checkpoints")])
    g = graph_def([node("x", "Placeholder")], [fn])
    assert _rules(scan_bytes(saved_model(g), "saved_model.pb"))["MS310"] is Severity.HIGH


def test_print_to_file_is_high_and_plain_print_is_not() -> None:
    to_file = node("p", "PrintV2", attrs=attr_s("output_stream", "file:///home/u/.bashrc"))
    to_err = node("p", "PrintV2", attrs=attr_s("output_stream", "stderr"))
    assert _rules(scan_bytes(graph_def([to_file]), "g.pb"))["MS310"] is Severity.HIGH
    assert _rules(scan_bytes(graph_def([to_err]), "g.pb")) == {}


def test_custom_ops_are_listed() -> None:
    g = graph_def([node("x", "Placeholder"), node("a", "Addons>GeLU", "x")])
    res = scan_bytes(g, "g.pb")
    assert any("Addons>GeLU" in f.message for f in res.findings if f.rule_id == "MS311")
    assert _rules(res) == {}


def test_keras_metadata_lambda_is_critical() -> None:
    lam = {
        "class_name": "Lambda",
        "name": "lambda",
        "config": {
            "name": "lambda",
            "function": {
                "class_name": "__lambda__",
                "config": {"code": base64.b64encode(b"\xe3os\0system").decode()},
            },
        },
    }
    benign = {"class_name": "Dense", "name": "dense", "config": {"name": "dense", "units": 2}}
    data = keras_metadata(
        [
            ("root", "_tf_keras_sequential", {"class_name": "Sequential", "config": {}}),
            ("root.layer-0", "_tf_keras_layer", lam),
        ]
    )
    res = scan_bytes(data, "keras_metadata.pb")
    assert _rules(res)["MS300"] is Severity.CRITICAL
    assert _fmt(res) == {"keras-metadata": CoverageStatus.SCANNED}
    ok = scan_bytes(keras_metadata([("root", "_tf_keras_layer", benign)]), "keras_metadata.pb")
    assert _rules(ok) == {} and _fmt(ok) == {"keras-metadata": CoverageStatus.SCANNED}


def test_damaged_saved_model_is_inconclusive() -> None:
    data = saved_model(benign_graph())
    # Corrupt a node: an op name that is not an identifier.
    bad = data.replace(b"MatMul", b"Mat\x00ul", 1)
    res = scan_bytes(bad, "saved_model.pb")
    assert _fmt(res)["tf-saved-model"] is CoverageStatus.INCONCLUSIVE


def test_matcher_is_strict() -> None:
    def probe(data: bytes, name: str = "x.bin") -> Probe:
        return Probe(data[:512], len(data), name, None)

    onnx_like = b"\x08\x07\x12\x07pytorch\x1a\x032.1" + b"\x3a\x10" + b"\x0a\x01x" * 5
    coreml_like = b"\x08\x04\x12\x06\x0a\x04\x0a\x02in" + b"\xf2\x03\x10" + b"\x00" * 16
    assert not tf_check.matches(probe(onnx_like, "model.onnx"))
    assert not tf_check.matches(probe(coreml_like, "model.mlmodel"))
    assert not tf_check.matches(probe(os.urandom(4096)))
    assert not tf_check.matches(probe(b"\x0a\x05hello world, plain text" * 4))
    assert tf_check.matches(probe(saved_model(benign_graph())))
    assert tf_check.matches(probe(benign_graph()))


# ------------------------------------------------------------------------------ corpus

_CORPUS = os.environ.get("MODELSHIELD_CORPUS")


@pytest.mark.corpus
@pytest.mark.skipif(not _CORPUS, reason="set MODELSHIELD_CORPUS to the real-model corpus")
def test_corpus_protobuf_and_hdf5_files() -> None:
    root = Path(_CORPUS or "")
    with open(root / "MANIFEST.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    checked = 0
    for row in rows:
        if row["magic"] not in ("protobuf", "hdf5"):
            continue
        path = root / row["path"]
        res = scan(path)
        high = [
            f for f in res.findings if f.rule_id.startswith("MS3") and f.severity >= Severity.HIGH
        ]
        assert not high, (row["path"], high)
        if row["kind"] == "onnx":
            head = path.read_bytes()[:512]
            assert not tf_check.matches(Probe(head, path.stat().st_size, path.name, None))
        if row["kind"] == "tf-protobuf":
            assert _fmt(res).get("tf-saved-model") is CoverageStatus.SCANNED
        checked += 1
    assert checked
