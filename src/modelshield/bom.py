"""CycloneDX 1.6 ML-BOM for a model directory or file (``modelshield bom``).

The document has one ``machine-learning-model`` component for the model, with:

* a nested ``file`` component per file (path, SHA-256, size, detected format, weights
  fingerprint where :func:`modelshield.fingerprint.fingerprint` applies);
* ``modelCard`` data from a Hugging Face ``README.md`` YAML front matter and ``config.json``
  (task, architecture, datasets), ``licenses``, ``tags`` and the base model as a pedigree ancestor;
* properties (``modelshield:*``) with the scan verdict, the findings summary, the detected formats,
  the weights fingerprint and the OpenSSF Model Signing digest of the whole model.

The JSON is generated directly (cyclonedx-python-lib has no model-card support) and validated
against the official CycloneDX 1.6 schema by the test suite. Nothing in the model is executed:
YAML is read with ``yaml.safe_load`` when PyYAML is installed, otherwise with a small parser for
plain ``key: value`` and lists; only known keys of expected types are used.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from modelshield import __version__
from modelshield.findings import ScanResult, Severity
from modelshield.signing.hashing import DEFAULT_IGNORED, Serialization, hash_model

SPEC_VERSION = "1.6"
MAX_CARD_BYTES = 1 << 20
MAX_CONFIG_BYTES = 16 << 20
MAX_LIST = 100
MAX_TEXT = 1024

NOT_WEIGHTS = {"text", "json", "empty", "binary-data", "gguf", "hdf5", "special", "tar", "7z"}
"""Formats the weights fingerprint never applies to (it reads PyTorch, safetensors, NumPy)."""

# Hugging Face licence identifiers -> SPDX IDs (anything else is recorded by name).
_SPDX = {
    "apache-2.0": "Apache-2.0",
    "mit": "MIT",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "gpl-2.0": "GPL-2.0-only",
    "gpl-3.0": "GPL-3.0-only",
    "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-3.0": "LGPL-3.0-only",
    "agpl-3.0": "AGPL-3.0-only",
    "mpl-2.0": "MPL-2.0",
    "cc0-1.0": "CC0-1.0",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "cc-by-nc-sa-4.0": "CC-BY-NC-SA-4.0",
    "cc-by-nd-4.0": "CC-BY-ND-4.0",
    "cc-by-nc-nd-4.0": "CC-BY-NC-ND-4.0",
    "openrail": "OpenRAIL",  # not SPDX: handled below
    "unlicense": "Unlicense",
    "bsl-1.0": "BSL-1.0",
    "artistic-2.0": "Artistic-2.0",
    "wtfpl": "WTFPL",
    "zlib": "Zlib",
    "isc": "ISC",
}
_NOT_SPDX = {"OpenRAIL"}


# ------------------------------------------------------------------------- model card data


def _simple_yaml(text: str) -> dict[str, Any]:
    """Parse ``key: value`` lines and ``key:`` followed by ``- item`` lines; nothing else."""
    out: dict[str, Any] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith((" ", "\t", "-")):
            item = line.strip()
            if current is not None and item.startswith("- "):
                value = _scalar(item[2:])
                if isinstance(out.get(current), list) and value is not None:
                    out[current].append(value)
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)\s*:\s*(.*)$", line)
        if not m:
            current = None
            continue
        key, rest = m.group(1), m.group(2).strip()
        if rest == "":
            out[key] = []
            current = key
        elif rest.startswith("[") and rest.endswith("]"):
            out[key] = [v for v in (_scalar(x) for x in rest[1:-1].split(",")) if v is not None]
            current = None
        else:
            out[key] = _scalar(rest)
            current = None
    return out


def _scalar(text: str) -> str | None:
    text = text.split(" #", 1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text or None


def front_matter(readme: str) -> dict[str, Any]:
    """The YAML front matter of a model card (``---`` ... ``---``), parsed safely."""
    if not readme.startswith("---"):
        return {}
    lines = readme.splitlines()
    if lines[0].strip() != "---":
        return {}
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        return {}
    text = "\n".join(lines[1:end])
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return _simple_yaml(text)
    try:
        data = yaml.safe_load(text)  # safe_load only: builds plain data, never objects
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:MAX_TEXT]
    return None


def _texts(value: object) -> list[str]:
    """A string or a list of strings, as a bounded list (other types are ignored)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    out = [v.strip()[:MAX_TEXT] for v in value[:MAX_LIST] if isinstance(v, str) and v.strip()]
    return list(dict.fromkeys(out))


def read_model_card(root: Path) -> dict[str, Any]:
    """Known fields from ``README.md`` front matter and ``config.json`` in ``root``."""
    card: dict[str, Any] = {}
    readme = root / "README.md"
    if readme.is_file() and readme.stat().st_size <= MAX_CARD_BYTES:
        meta = front_matter(readme.read_text(encoding="utf-8", errors="replace"))
        card["license"] = _texts(meta.get("license"))
        card["task"] = _text(meta.get("pipeline_tag"))
        card["base_model"] = _texts(meta.get("base_model"))
        card["datasets"] = _texts(meta.get("datasets"))
        card["language"] = _texts(meta.get("language"))
        card["tags"] = _texts(meta.get("tags"))
        card["library"] = _text(meta.get("library_name"))
        card["model_name"] = _text(meta.get("model_name"))
    config = root / "config.json"
    if config.is_file() and config.stat().st_size <= MAX_CONFIG_BYTES:
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            cfg = None
        if isinstance(cfg, dict):
            card["architectures"] = _texts(cfg.get("architectures"))
            card["model_type"] = _text(cfg.get("model_type"))
            card["task"] = card.get("task") or _text(cfg.get("task") or cfg.get("pipeline_tag"))
            card["license"] = card.get("license") or _texts(cfg.get("license"))
            card["base_model"] = card.get("base_model") or _texts(cfg.get("base_model"))
    return {k: v for k, v in card.items() if v}


# ------------------------------------------------------------------------------- the BOM


def _prop(name: str, value: object) -> dict[str, str]:
    return {"name": name, "value": str(value)}


def _license(value: str) -> dict[str, Any]:
    spdx = _SPDX.get(value.lower())
    if spdx and spdx not in _NOT_SPDX:
        return {"license": {"id": spdx}}
    return {"license": {"name": value}}


def _verdict(result: ScanResult) -> str:
    if result.at_or_above(Severity.HIGH):
        return "unsafe"
    return "clean" if result.complete else "incomplete"


def _scan_properties(result: ScanResult) -> list[dict[str, str]]:
    counts = Counter(f.severity.label for f in result.findings)
    props = [
        _prop("modelshield:scan:verdict", _verdict(result)),
        _prop("modelshield:scan:complete", str(result.complete).lower()),
        _prop("modelshield:scan:findings", len(result.findings)),
    ]
    top = result.max_severity()
    if top is not None:
        props.append(_prop("modelshield:scan:max-severity", top.label))
    for sev in sorted(Severity, reverse=True):
        if counts.get(sev.label):
            props.append(_prop(f"modelshield:scan:findings:{sev.label}", counts[sev.label]))
    rules = sorted({f.rule_id for f in result.findings})
    if rules:
        props.append(_prop("modelshield:scan:rules", ",".join(rules)))
    if result.errors:
        props.append(_prop("modelshield:scan:errors", len(result.errors)))
    return props


def _formats_by_file(result: ScanResult, root: Path, shown: str, is_dir: bool) -> dict[str, str]:
    """Relative path -> top-level format from the scan coverage."""
    out: dict[str, str] = {}
    prefix = shown.rstrip("/") + "/"
    for cov in result.coverage:
        if cov.member is not None:
            continue
        if not is_dir:
            rel = "."
        elif shown in (".", "./"):
            rel = cov.path
        elif cov.path.startswith(prefix):
            rel = cov.path[len(prefix) :]
        else:
            continue
        out.setdefault(rel, cov.format)
    return out


def _fingerprint(path: str) -> str | None:
    from modelshield.fingerprint import fingerprint

    try:
        return fingerprint(path).value
    except Exception:  # not a weights file, or unreadable: the fingerprint does not apply
        return None


def build_bom(
    path: str | os.PathLike[str],
    *,
    scan: bool = True,
    fingerprints: bool = True,
    jobs: int = 0,
    scan_result: ScanResult | None = None,
    serial: str | None = None,
    timestamp: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Build the CycloneDX 1.6 BOM (a JSON-ready dict) for the model at ``path``."""
    root = Path(path)
    is_dir = root.is_dir()
    if not is_dir and not root.is_file():
        from modelshield.errors import InputError

        raise InputError(f"{path}: no such file or directory")
    manifest = hash_model(root, Serialization(ignore_paths=DEFAULT_IGNORED), jobs=jobs)
    result = scan_result
    if result is None and scan:
        from modelshield.scanner import scan as run_scan

        result = run_scan(os.fspath(path), jobs=jobs)
    formats = _formats_by_file(result, root, os.fspath(path), is_dir) if result else {}
    card = read_model_card(root) if is_dir else {}

    name = card.get("model_name") or root.resolve().name
    model_ref = "model"
    files: list[dict[str, Any]] = []
    fps: dict[str, str] = {}
    for i, res in enumerate(manifest.resources):
        full = root if res.name == "." else root / res.name
        fname = root.name if res.name == "." else res.name
        fprops = [_prop("modelshield:size", full.stat().st_size)]
        fmt = formats.get(res.name)
        if fmt:
            fprops.append(_prop("modelshield:format", fmt))
        if fingerprints and (fmt is None or fmt not in NOT_WEIGHTS):
            fp = _fingerprint(os.fspath(full))
            if fp:
                fps[res.name] = fp
                fprops.append(_prop("modelshield:weights-fingerprint", fp))
        files.append(
            {
                "type": "file",
                "bom-ref": f"file-{i}",
                "name": fname,
                "hashes": [{"alg": "SHA-256", "content": res.digest}],
                "properties": fprops,
            }
        )

    props = [
        _prop("modelshield:model-signing:digest", "sha256:" + manifest.root_digest()),
        _prop("modelshield:files", len(files)),
        _prop("modelshield:bytes", manifest.bytes_hashed),
    ]
    detected = sorted(set(formats.values()))
    if detected:
        props.append(_prop("modelshield:formats", ",".join(detected)))
    if len(fps) == 1:
        props.append(_prop("modelshield:weights-fingerprint", next(iter(fps.values()))))
    if fps:
        props.append(_prop("modelshield:weights-fingerprint:scheme", "modelshield-weights-v1"))
    if result is not None:
        props += _scan_properties(result)
    else:
        props.append(_prop("modelshield:scan:verdict", "not-scanned"))
    for key in ("model_type", "library"):
        if card.get(key):
            props.append(_prop(f"huggingface:{key}", card[key]))
    for lang in card.get("language", []):
        props.append(_prop("huggingface:language", lang))

    model: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": model_ref,
        "name": name,
    }
    if not is_dir:
        model["hashes"] = [{"alg": "SHA-256", "content": manifest.resources[0].digest}]
    if card.get("license"):
        model["licenses"] = [_license(v) for v in card["license"]]
    if card.get("base_model"):
        model["pedigree"] = {
            "ancestors": [
                {"type": "machine-learning-model", "bom-ref": f"base-{i}", "name": b}
                for i, b in enumerate(card["base_model"])
            ]
        }
    params: dict[str, Any] = {}
    if card.get("task"):
        params["task"] = card["task"]
    if card.get("model_type"):
        params["architectureFamily"] = card["model_type"]
    if card.get("architectures"):
        params["modelArchitecture"] = ", ".join(card["architectures"])
    if card.get("datasets"):
        params["datasets"] = [{"type": "dataset", "name": d} for d in card["datasets"]]
    if params:
        model["modelCard"] = {"modelParameters": params}
    if card.get("tags"):
        model["tags"] = card["tags"]
    model["properties"] = props
    if is_dir:
        model["components"] = files
    else:
        model["properties"] = props + [p for p in files[0]["properties"] if p not in props]

    stamp = timestamp or datetime.datetime.now(datetime.UTC)
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial or f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "modelshield",
                        "version": __version__,
                    }
                ]
            },
        },
        "components": [model],
    }


def render_bom(path: str | os.PathLike[str], **kwargs: Any) -> str:
    return json.dumps(build_bom(path, **kwargs), indent=2, ensure_ascii=False) + "\n"


__all__ = ["SPEC_VERSION", "build_bom", "front_matter", "read_model_card", "render_bom"]
