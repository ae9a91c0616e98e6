"""The catalogue of rules: one stable ID per kind of finding.

IDs are never reused. Families: ``MS1xx`` pickle analysis, ``MS2xx`` containers, ``MS3xx``
Keras and TensorFlow, ``MS4xx`` ONNX and TFLite, ``MS5xx`` GGUF and safetensors, ``MS6xx`` code
shipped beside models, ``MS7xx`` dynamic analysis (sandbox), ``MS8xx`` signatures
(``scan --verify``).
Each rule's ``description`` is its documentation (shown by ``modelshield rules`` and in SARIF).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from modelshield.findings import Confidence, Severity
from modelshield.rules.rule import Rule

_RULES = (
    Rule(
        "MS100",
        "pickle-malformed",
        Severity.MEDIUM,
        Confidence.HIGH,
        20,
        "Malformed or truncated pickle stream",
        "The pickle stream breaks the format at this point (unknown opcode, truncated argument, "
        "stack underflow, bad memo reference). CPython's unpickler executes every opcode before "
        "the break, so everything before it was analysed; a benign writer never produces this.",
    ),
    Rule(
        "MS101",
        "dangerous-call",
        Severity.CRITICAL,
        Confidence.HIGH,
        502,
        "Known-dangerous callable invoked when the file is loaded",
        "Loading this file calls a function known to execute code, start processes, touch the "
        "file system or network, load native code or install packages. This is arbitrary code "
        "execution on load (CWE-502).",
    ),
    Rule(
        "MS102",
        "unallowed-call",
        Severity.HIGH,
        Confidence.MEDIUM,
        502,
        "Callable outside the allowlist invoked when the file is loaded",
        "Loading this file calls a function or class that is not on modelshield's allowlist of "
        "callables known to be safe during unpickling. It may be harmless, but nothing vouches "
        "for it; allow it in the configuration with a reason if you trust it.",
    ),
    Rule(
        "MS103",
        "dynamic-call",
        Severity.HIGH,
        Confidence.MEDIUM,
        502,
        "Call whose target cannot be determined statically",
        "The pickle calls an object computed at load time (the result of another call, an item "
        "taken from a container, a persistent ID). Benign writers do not produce this; it is how "
        "denylist scanners are bypassed.",
    ),
    Rule(
        "MS104",
        "dangerous-reference",
        Severity.HIGH,
        Confidence.MEDIUM,
        502,
        "Known-dangerous callable stored in the model",
        "The file references a dangerous callable without calling it while loading. The loaded "
        "object holds it and may call it later (e.g. a FunctionTransformer whose func is eval).",
    ),
    Rule(
        "MS105",
        "unallowed-import",
        Severity.MEDIUM,
        Confidence.LOW,
        502,
        "Global outside the allowlist imported",
        "Loading this file imports a module attribute that is not on the allowlist. Importing a "
        "module runs its top-level code; the object is not called while loading.",
    ),
    Rule(
        "MS106",
        "object-mutation",
        Severity.HIGH,
        Confidence.HIGH,
        915,
        "Attributes written on an existing module, class or function",
        "A BUILD opcode (or setattr) changes the attributes of an object that the pickle did not "
        "create, such as a module or a class. This can replace functions process-wide.",
    ),
    Rule(
        "MS107",
        "nested-payload",
        Severity.HIGH,
        Confidence.HIGH,
        502,
        "Serialized payload handed to a loader inside the pickle",
        "The pickle passes bytes to another deserializer (pickle.loads, marshal.loads, "
        "torch.load, ...). The nested payload is analysed where possible and its findings "
        "reported; marshalled code objects are never decoded.",
    ),
    Rule(
        "MS108",
        "persistent-id",
        Severity.INFO,
        Confidence.HIGH,
        None,
        "Persistent IDs resolved by the loader",
        "The pickle uses PERSID/BINPERSID; what they resolve to depends on the loader "
        "(PyTorch uses them for tensor storages). A plain pickle.load refuses them.",
    ),
    Rule(
        "MS109",
        "extension-code",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        502,
        "Global looked up through the copyreg extension registry",
        "EXT1/EXT2/EXT4 import a global through copyreg's extension registry, which is empty "
        "unless the loading program registered codes. The target cannot be known statically.",
    ),
    Rule(
        "MS110",
        "trailing-data",
        Severity.INFO,
        Confidence.HIGH,
        None,
        "Data after the last pickle",
        "Bytes follow the last complete pickle and do not start another one. pickle.load ignores "
        "them; a loader that reads further could interpret them.",
    ),
    Rule(
        "MS111",
        "analysis-limit",
        Severity.MEDIUM,
        Confidence.HIGH,
        400,
        "Analysis stopped at a limit",
        "A safety limit (opcodes, memo, stack, nesting, string size, decompressed size or time) "
        "was reached, so content after this point was not analysed. The input is reported as "
        "partially covered.",
    ),
    Rule(
        "MS113",
        "unallowed-class",
        Severity.MEDIUM,
        Confidence.LOW,
        502,
        "Object of a class outside the allowlist restored",
        "The pickle creates an instance of a class that is not on the allowlist without calling "
        "its constructor (NEWOBJ, copyreg._reconstructor), as pickles of ordinary user classes "
        "do. Nothing is called on load beyond the class's __new__, but the class's __setstate__ "
        "or __del__ may run code. Allow the class in the configuration if you trust it.",
    ),
    Rule(
        "MS112",
        "analyser-error",
        Severity.HIGH,
        Confidence.LOW,
        None,
        "The analyser failed on this input",
        "modelshield hit an internal error while analysing this input. The input is reported as "
        "inconclusive; please report the bug with the file if you can share it.",
    ),
)

_CONTAINER_RULES = (
    Rule(
        "MS200",
        "polyglot",
        Severity.HIGH,
        Confidence.HIGH,
        436,
        "File is valid as more than one loadable format",
        "The file can be read as two formats by different loaders, e.g. a pickle from byte 0 "
        "(what torch.load's legacy path runs) and a zip archive found from the end (what "
        "zip-based scanners look at). Every interpretation was analysed; benign writers never "
        "produce this.",
    ),
    Rule(
        "MS201",
        "archive-inconsistency",
        Severity.MEDIUM,
        Confidence.HIGH,
        436,
        "Archive structure that readers interpret differently",
        "Data before the archive, local and central header names that differ, duplicate member "
        "names, an encryption flag PyTorch ignores, a damaged local header: Python's zipfile "
        "and PyTorch's reader see different content, which is how zip-based scanners have been "
        "bypassed (e.g. CVE-2025-10156). Every member was read the lenient way PyTorch does.",
    ),
    Rule(
        "MS202",
        "unsafe-path",
        Severity.HIGH,
        Confidence.HIGH,
        22,
        "Archive member path escapes the extraction directory",
        "A member name is absolute or contains '..' (zip-slip / tar-slip), or a tar member is a "
        "link pointing outside: extracting the archive can overwrite arbitrary files.",
    ),
    Rule(
        "MS203",
        "container-limit",
        Severity.MEDIUM,
        Confidence.HIGH,
        409,
        "Container content not analysed because of a limit",
        "A decompression bomb, an archive with too many members, nesting deeper than allowed or "
        "a member larger than allowed: the content beyond the limit was not analysed and the "
        "input is reported as partially covered.",
    ),
    Rule(
        "MS204",
        "torchscript-code",
        Severity.INFO,
        Confidence.HIGH,
        94,
        "TorchScript code in the archive",
        "The archive carries TorchScript source (code/...), which torch.jit.load compiles and "
        "runs. Operations that reach the file system or custom operator libraries are reported "
        "at a higher severity.",
    ),
    Rule(
        "MS205",
        "disguised-format",
        Severity.MEDIUM,
        Confidence.HIGH,
        646,
        "File name suggests a safe format but the content can run code",
        "The extension names a format that cannot execute code (e.g. .safetensors, .json, "
        ".npy) but the content is a pickle or a container holding one. Loaders pick the parser "
        "by content, people by name.",
    ),
    Rule(
        "MS206",
        "container-damaged",
        Severity.MEDIUM,
        Confidence.MEDIUM,
        20,
        "Container cannot be fully read",
        "An archive, compressed stream or NumPy header is damaged or truncated, so part of it "
        "could not be analysed. The input is reported as partially covered or inconclusive.",
    ),
)


class _Catalogue(Mapping[str, Rule]):
    """Rule ID -> rule. The pickle and container rules are built in; the other families (the
    format checks' tables, the sandbox, signatures) are imported the first time an ID outside
    them is asked for (or the catalogue is listed), without importing the checks themselves."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._complete = False
        self._add((*_RULES, *_CONTAINER_RULES))

    def _add(self, rules: Iterable[Rule]) -> None:
        for r in rules:
            if r.id in self._rules:
                raise AssertionError(f"duplicate rule id {r.id}")
            self._rules[r.id] = r

    def _load_all(self) -> None:
        if self._complete:
            return
        from modelshield.rules import checks
        from modelshield.sandbox.rules import RULES as SANDBOX_RULES
        from modelshield.signing.rules import RULES as SIGNING_RULES

        self._complete = True
        self._add(SANDBOX_RULES)
        self._add(SIGNING_RULES)
        for table in (
            checks.GGUF,
            checks.KERAS,
            checks.SAFETENSORS,
            checks.TFLITE,
            checks.ONNX,
            checks.TENSORFLOW,
            checks.SOURCE,
        ):
            self._add(table)
        self._rules = dict(sorted(self._rules.items()))

    def __getitem__(self, rule_id: str) -> Rule:
        try:
            return self._rules[rule_id]
        except KeyError:
            self._load_all()
            return self._rules[rule_id]

    def __contains__(self, rule_id: object) -> bool:
        if rule_id in self._rules:
            return True
        self._load_all()
        return rule_id in self._rules

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return iter(self._rules)

    def __len__(self) -> int:
        self._load_all()
        return len(self._rules)


RULES: Mapping[str, Rule] = _Catalogue()


def get_rule(rule_id: str) -> Rule:
    return RULES[rule_id]
