"""``modelshield bom``: CycloneDX 1.6 ML-BOM content and validation against the official schema
(shipped by cyclonedx-python-lib, a test dependency)."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelshield import bom, cli_integrity
from modelshield.fingerprint import fingerprint

cdx_json = pytest.importorskip("cyclonedx.validation.json")
cdx_schema = pytest.importorskip("cyclonedx.schema")

EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."
README = """---
license: apache-2.0
pipeline_tag: text-classification
base_model: google-bert/bert-base-uncased
datasets:
  - imdb
  - sst2
language: [en]
tags:
  - sentiment
library_name: transformers
---
# A model card
"""


def _validate(doc: dict[str, Any]) -> None:
    validator = cdx_json.JsonStrictValidator(cdx_schema.SchemaVersion.V1_6)
    errors = validator.validate_str(json.dumps(doc), all_errors=True)
    assert errors is None, [str(e) for e in errors or []]


def _props(component: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in component.get("properties", []):
        out.setdefault(p["name"], []).append(p["value"])
    return out


@pytest.fixture
def hf_model(tmp_path: Path) -> Path:
    root = tmp_path / "sentiment-model"
    root.mkdir()
    save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(root / "model.safetensors"))
    (root / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"], "model_type": "bert"})
    )
    (root / "README.md").write_text(README)
    return root


def _model(doc: dict[str, Any]) -> dict[str, Any]:
    [model] = doc["components"]
    assert model["type"] == "machine-learning-model"
    out: dict[str, Any] = model
    return out


def test_directory_bom_validates_and_has_content(hf_model: Path) -> None:
    doc = bom.build_bom(hf_model)
    _validate(doc)
    assert doc["specVersion"] == "1.6" and doc["bomFormat"] == "CycloneDX"
    model = _model(doc)
    files = {c["name"]: c for c in model["components"]}
    assert set(files) == {"model.safetensors", "config.json", "README.md"}
    weights = hf_model / "model.safetensors"
    assert files["model.safetensors"]["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(weights.read_bytes()).hexdigest()}
    ]
    fp = fingerprint(str(weights)).value
    assert _props(files["model.safetensors"])["modelshield:weights-fingerprint"] == [fp]
    assert "modelshield:weights-fingerprint" not in _props(files["config.json"])
    props = _props(model)
    assert props["modelshield:weights-fingerprint"] == [fp]
    assert props["modelshield:scan:verdict"] == ["clean"]
    assert props["modelshield:scan:findings"] == ["0"]
    assert "safetensors" in props["modelshield:formats"][0]
    assert props["modelshield:model-signing:digest"][0].startswith("sha256:")
    # model card
    card = model["modelCard"]["modelParameters"]
    assert card["task"] == "text-classification"
    assert card["modelArchitecture"] == "BertForSequenceClassification"
    assert card["architectureFamily"] == "bert"
    assert [d["name"] for d in card["datasets"]] == ["imdb", "sst2"]
    assert model["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert model["pedigree"]["ancestors"][0]["name"] == "google-bert/bert-base-uncased"
    assert model["tags"] == ["sentiment"]
    assert props["huggingface:language"] == ["en"]


def test_unsafe_model_verdict_and_findings(hf_model: Path) -> None:
    (hf_model / "extra.pkl").write_bytes(EVIL)
    doc = bom.build_bom(hf_model)
    _validate(doc)
    props = _props(_model(doc))
    assert props["modelshield:scan:verdict"] == ["unsafe"]
    assert int(props["modelshield:scan:findings"][0]) >= 1
    assert props["modelshield:scan:max-severity"] == ["critical"]
    assert "pickle" in props["modelshield:formats"][0]


def test_single_file_bom(hf_model: Path) -> None:
    weights = hf_model / "model.safetensors"
    doc = bom.build_bom(weights)
    _validate(doc)
    model = _model(doc)
    assert model["name"] == "model.safetensors"
    assert model["hashes"][0]["content"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert _props(model)["modelshield:weights-fingerprint"] == [fingerprint(str(weights)).value]
    assert "components" not in model


def test_no_scan_no_fingerprint_and_unknown_licence(hf_model: Path) -> None:
    (hf_model / "README.md").write_text("---\nlicense: llama2\n---\n")
    doc = bom.build_bom(hf_model, scan=False, fingerprints=False)
    _validate(doc)
    model = _model(doc)
    props = _props(model)
    assert props["modelshield:scan:verdict"] == ["not-scanned"]
    assert "modelshield:weights-fingerprint" not in props
    assert model["licenses"] == [{"license": {"name": "llama2"}}]


def test_front_matter_is_parsed_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = "---\nlicense: !!python/object/apply:os.system ['echo pwned']\n---\n"
    assert bom.front_matter(hostile) == {}  # yaml.safe_load refuses python tags
    real_import = builtins.__import__

    def no_yaml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "yaml":
            raise ImportError("no yaml")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_yaml)
    meta = bom.front_matter(README)
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["imdb", "sst2"]
    assert meta["language"] == ["en"]
    assert bom.front_matter("no front matter") == {}
    assert bom.front_matter("---\nunterminated: yes\n") == {}


def test_cli_bom(hf_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_integrity.add_parsers(sub)
    out = tmp_path / "bom.json"
    assert cli_integrity.run(parser.parse_args(["bom", str(hf_model), "-o", str(out)])) == 0
    _validate(json.loads(out.read_text()))
    assert cli_integrity.run(parser.parse_args(["bom", str(hf_model), "--no-scan"])) == 0
    _validate(json.loads(capsys.readouterr().out))
    assert cli_integrity.run(parser.parse_args(["bom", str(tmp_path / "missing")])) == 2
