"""TensorFlow SavedModels, frozen graphs and keras_metadata.pb, read without TensorFlow.

Every op of the graph and of its function library is listed from the protobuf wire format. Ops
that reach outside the graph are flagged: Python callbacks (PyFunc, EagerPyFunc), file writes
and reads, directory listing, network and database access. The checkpoint ops every SavedModel
carries (SaveV2, RestoreV2, MergeV2Checkpoints in the saver graph ``save/...`` or the
``__inference__traced_save/restore_*`` functions, fed the variables path by the loader) are
reported at INFO only. ``keras_metadata.pb`` holds the Keras configs of a Keras SavedModel: they
are walked with the Keras rules (Lambda bytecode, foreign modules...).
"""

from __future__ import annotations

import json
import re

from modelshield.checks import keras as keras_check
from modelshield.checks.context import Context, Probe
from modelshield.findings import Confidence, CoverageStatus, Severity
from modelshield.formats import tf_graph as tg
from modelshield.rules import checks as rule_tables

RULES = rule_tables.TENSORFLOW

_PYTHON = "calls a Python function registered in the loading process"
_WRITE = "writes files"
_READ = "reads files"
_NET = "network or database access"

DANGEROUS_OPS: dict[str, tuple[Severity, str]] = {
    "PyFunc": (Severity.CRITICAL, _PYTHON),
    "PyFuncStateless": (Severity.CRITICAL, _PYTHON),
    "EagerPyFunc": (Severity.CRITICAL, _PYTHON),
    "WriteFile": (Severity.HIGH, _WRITE),
    "Save": (Severity.HIGH, _WRITE),
    "SaveSlices": (Severity.HIGH, _WRITE),
    "SaveV2": (Severity.HIGH, _WRITE),
    "MergeV2Checkpoints": (Severity.HIGH, "writes and deletes checkpoint files"),
    "CreateSummaryFileWriter": (Severity.HIGH, _WRITE),
    "CreateSummaryDbWriter": (Severity.HIGH, _WRITE),
    "WriteSummary": (Severity.HIGH, _WRITE),
    "WriteRawProtoSummary": (Severity.HIGH, _WRITE),
    "WriteScalarSummary": (Severity.HIGH, _WRITE),
    "WriteHistogramSummary": (Severity.HIGH, _WRITE),
    "WriteImageSummary": (Severity.HIGH, _WRITE),
    "WriteAudioSummary": (Severity.HIGH, _WRITE),
    "WriteGraphSummary": (Severity.HIGH, _WRITE),
    "ImportEvent": (Severity.HIGH, _WRITE),
    "SaveDataset": (Severity.HIGH, _WRITE),
    "SaveDatasetV2": (Severity.HIGH, _WRITE),
    "SnapshotDataset": (Severity.HIGH, _WRITE),
    "SnapshotDatasetV2": (Severity.HIGH, _WRITE),
    "DatasetToTFRecord": (Severity.HIGH, _WRITE),
    "ExperimentalDatasetToTFRecord": (Severity.HIGH, _WRITE),
    "DebugIdentity": (Severity.HIGH, "sends tensors to debug URLs (file:// or grpc://)"),
    "DebugIdentityV2": (Severity.HIGH, "writes tensors to a debug dump directory"),
    "DebugNanCount": (Severity.HIGH, "sends tensors to debug URLs"),
    "DebugNumericSummary": (Severity.HIGH, "sends tensors to debug URLs"),
    "Rpc": (Severity.HIGH, _NET),
    "TryRpc": (Severity.HIGH, _NET),
    "RpcCall": (Severity.HIGH, _NET),
    "RpcClient": (Severity.HIGH, _NET),
    "RpcServer": (Severity.HIGH, _NET),
    "RpcServerStart": (Severity.HIGH, _NET),
    "RpcServerRegister": (Severity.HIGH, _NET),
    "DataServiceDataset": (Severity.HIGH, _NET),
    "DataServiceDatasetV2": (Severity.HIGH, _NET),
    "DataServiceDatasetV3": (Severity.HIGH, _NET),
    "DataServiceDatasetV4": (Severity.HIGH, _NET),
    "SqlDataset": (Severity.HIGH, _NET),
    "ExperimentalSqlDataset": (Severity.HIGH, _NET),
    "BigQueryReader": (Severity.HIGH, _NET),
    "GcsConfigureCredentials": (Severity.MEDIUM, _NET),
    "GcsConfigureBlockCache": (Severity.MEDIUM, _NET),
    "ReadFile": (Severity.MEDIUM, _READ),
    "MatchingFiles": (Severity.MEDIUM, "lists files matching a pattern"),
    "MatchingFilesDataset": (Severity.MEDIUM, "lists files matching a pattern"),
    "ExperimentalMatchingFilesDataset": (Severity.MEDIUM, "lists files matching a pattern"),
    "Restore": (Severity.MEDIUM, _READ),
    "RestoreSlice": (Severity.MEDIUM, _READ),
    "RestoreV2": (Severity.MEDIUM, _READ),
    "ImmutableConst": (Severity.MEDIUM, "memory-maps a file"),
    "FixedLengthRecordReader": (Severity.MEDIUM, _READ),
    "FixedLengthRecordReaderV2": (Severity.MEDIUM, _READ),
    "TFRecordReader": (Severity.MEDIUM, _READ),
    "TFRecordReaderV2": (Severity.MEDIUM, _READ),
    "TextLineReader": (Severity.MEDIUM, _READ),
    "TextLineReaderV2": (Severity.MEDIUM, _READ),
    "WholeFileReader": (Severity.MEDIUM, _READ),
    "WholeFileReaderV2": (Severity.MEDIUM, _READ),
    "LMDBReader": (Severity.MEDIUM, _READ),
    "TextLineDataset": (Severity.MEDIUM, _READ),
    "TFRecordDataset": (Severity.MEDIUM, _READ),
    "TFRecordDatasetV2": (Severity.MEDIUM, _READ),
    "FixedLengthRecordDataset": (Severity.MEDIUM, _READ),
    "FixedLengthRecordDatasetV2": (Severity.MEDIUM, _READ),
    "CSVDataset": (Severity.MEDIUM, _READ),
    "CSVDatasetV2": (Severity.MEDIUM, _READ),
    "ExperimentalCSVDataset": (Severity.MEDIUM, _READ),
    "LMDBDataset": (Severity.MEDIUM, _READ),
    "ExperimentalLMDBDataset": (Severity.MEDIUM, _READ),
    "LoadDataset": (Severity.MEDIUM, _READ),
    "InitializeTableFromTextFile": (Severity.LOW, "reads a vocabulary file (usually an asset)"),
    "InitializeTableFromTextFileV2": (Severity.LOW, "reads a vocabulary file (usually an asset)"),
    "LoadAndRemapMatrix": (Severity.MEDIUM, _READ),
    "GenerateVocabRemapping": (Severity.MEDIUM, _READ),
}

_SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "Save", "Restore"})
_SAVER_NODE = re.compile(r"^save(?:_\d+)?/")
_SAVER_FUNCTION = re.compile(r"^__inference__traced_(?:save|restore)_\d+$")


def _is_standard_saver(node: tg.Node) -> bool:
    if node.op not in _SAVER_OPS:
        return False
    if node.function is None:
        return bool(_SAVER_NODE.match(node.name))
    return bool(_SAVER_FUNCTION.match(node.function))


def matches(probe: Probe) -> bool:
    head, size, name = probe.head, probe.size, probe.name.rsplit("/", 1)[-1]
    return (
        tg.looks_like_keras_metadata(head, size, name)
        or tg.looks_like_saved_model(head, size, name)
        or tg.looks_like_graph_def(head, size)
    )


def check(ctx: Context) -> None:
    head = ctx.bytes(0, 512)
    name = ctx.name.rsplit("/", 1)[-1]
    if tg.looks_like_keras_metadata(head, ctx.size, name):
        _keras_metadata(ctx)
        return
    saved = tg.looks_like_saved_model(head, ctx.size, name)
    try:
        graph = (
            tg.parse_saved_model(ctx.buf, ctx.start, ctx.end)
            if saved
            else tg.parse_graph_def(ctx.buf, ctx.start, ctx.end)
        )
    except tg.GraphError as exc:
        fmt = "tf-saved-model" if saved else "tf-graph"
        ctx.cover(
            CoverageStatus.INCONCLUSIVE,
            fmt,
            f"looks like a TensorFlow {fmt} but cannot be parsed: {exc}",
        )
        return
    ctx.add_bytes_read(ctx.size)
    _report_graph(ctx, graph)


def _report_graph(ctx: Context, graph: tg.Graph) -> None:
    saver: dict[str, int] = {}
    flagged: dict[tuple[str, str | None], list[str]] = {}
    ops: dict[str, int] = {}
    for node in graph.nodes:
        ops[node.op] = ops.get(node.op, 0) + 1
        if node.op not in DANGEROUS_OPS and node.op not in ("PrintV2", "Print"):
            continue
        if _is_standard_saver(node):
            saver[node.op] = saver.get(node.op, 0) + 1
            continue
        flagged.setdefault((node.op, node.function), []).append(node.name)
    for (op, function), names in sorted(flagged.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        where = f" in function {function!r}" if function else ""
        if op in ("PrintV2", "Print"):
            streams = {
                v
                for n in graph.nodes
                if n.op == op and n.function == function and n.name in names
                for k, v in n.string_attrs
                if k == "output_stream" and v.startswith("file://")
            }
            if not streams:
                continue
            ctx.finding(
                "MS310",
                f"{op} writes to {', '.join(sorted(streams))}{where}",
                severity=Severity.HIGH,
                evidence=", ".join(names[:10]),
            )
            continue
        severity, why = DANGEROUS_OPS[op]
        ctx.finding(
            "MS310",
            f"op {op} ({why}) used by {len(names)} node(s){where}",
            severity=severity,
            evidence=", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
        )
    if saver:
        listing = ", ".join(f"{op} x{n}" for op, n in sorted(saver.items()))
        ctx.finding(
            "MS310",
            f"standard checkpoint saver ops ({listing}): they read and write the variables "
            "path the loader passes in",
            severity=Severity.INFO,
            confidence=Confidence.MEDIUM,
        )
    custom = sorted(op for op in ops if ">" in op)
    if custom:
        ctx.finding(
            "MS311",
            f"custom ops from op libraries (native code the loader must load): {', '.join(custom)}",
        )
    inventory = ", ".join(sorted(ops)[:60]) + (" ..." if len(ops) > 60 else "")
    ctx.finding(
        "MS311",
        f"{len(graph.nodes)} nodes, {len(ops)} distinct ops, {len(graph.functions)} library "
        f"functions: {inventory}",
    )
    fmt = "tf-saved-model" if graph.kind == "saved_model" else "tf-graph"
    if graph.truncated:
        ctx.cover(CoverageStatus.PARTIAL, fmt, f"walk stopped: {graph.truncated}")
    else:
        ctx.cover(CoverageStatus.SCANNED, fmt, f"{len(graph.nodes)} nodes, {len(ops)} ops")


def _keras_metadata(ctx: Context) -> None:
    try:
        entries = tg.parse_keras_metadata(ctx.buf, ctx.start, ctx.end)
    except tg.GraphError as exc:
        ctx.finding("MS304", f"keras_metadata.pb cannot be parsed: {exc}")
        ctx.cover(CoverageStatus.INCONCLUSIVE, "keras-metadata", str(exc))
        return
    ctx.add_bytes_read(ctx.size)
    complete = True
    errors = 0
    for e in entries:
        if not e.metadata:
            continue
        try:
            root = json.loads(e.metadata)
        except (ValueError, RecursionError):
            errors += 1
            continue
        complete &= keras_check.report_config(ctx, root, None, f"keras_metadata node {e.node_path}")
    if errors:
        ctx.finding("MS304", f"{errors} Keras metadata entries are not valid JSON")
        complete = False
    ctx.cover(
        CoverageStatus.SCANNED if complete else CoverageStatus.PARTIAL,
        "keras-metadata",
        f"{len(entries)} Keras SavedModel metadata entries",
    )
