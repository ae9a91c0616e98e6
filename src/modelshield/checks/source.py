"""Code shipped beside a model: Hugging Face ``auto_map`` references and Python source.

``AutoModel.from_pretrained(..., trust_remote_code=True)`` (and the Auto* tokenizer, processor
and config classes) import the module named by an ``auto_map`` entry of the model's
``config.json`` / ``tokenizer_config.json`` / ``(pre)processor_config.json``: a ``.py`` file in
the model repository, or with the ``org/repo--module.Class`` form a file in *another*
repository, fetched at load time. Importing runs the module body; the model class's methods run
while the model is built and used. Any ``.py`` file in a model repository can be such code.

Python source is analysed as a syntax tree (:mod:`modelshield.formats.python_source`): nothing is
imported, compiled or run. Findings are graded by what the code does (process, network, file
system, dynamic code) and by when it runs: on import (module body, class bodies, functions called
from there) is graded up, only under ``if __name__ == "__main__":`` is graded down (never runs on
import).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from modelshield.checks.context import Context, Probe
from modelshield.findings import CoverageStatus, Severity
from modelshield.formats.python_source import (
    MAX_SOURCE,
    Call,
    Reference,
    SourceAnalysis,
    Store,
    analyse_source,
)
from modelshield.formats.python_source import Context as RunsAt
from modelshield.formats.sniff import looks_like_text
from modelshield.rules import checks as rule_tables

RULES = rule_tables.SOURCE

_PY_SUFFIXES = (".py", ".pyw")
_CONFIG_NAMES = frozenset(
    {
        "config.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "feature_extractor_config.json",
        "image_processor_config.json",
        "video_preprocessor_config.json",
    }
)
_MAX_CONFIG = 16 << 20
_MAX_JSON_DEPTH = 8


def matches(probe: Probe) -> bool:
    name = probe.name.lower()
    if name.endswith(_PY_SUFFIXES):
        return looks_like_text(probe.head)
    head = probe.head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{") or not looks_like_text(probe.head):
        return False
    # auto_map lives in a handful of configuration files; only those (or a JSON object that
    # says auto_map near its start) are claimed, never arbitrary text or JSON.
    return (
        name in _CONFIG_NAMES
        or (name.endswith("_config.json") and probe.size <= _MAX_CONFIG)
        or b'"auto_map"' in head
    )


def check(ctx: Context) -> None:
    if ctx.name.lower().endswith(_PY_SUFFIXES):
        _check_source(ctx)
    else:
        _check_config(ctx)


# ---------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class _Ref:
    key: str
    """The Auto class (or pipeline task) the reference is for."""
    value: str


def _check_config(ctx: Context) -> None:
    if ctx.size > _MAX_CONFIG:
        ctx.cover(CoverageStatus.SCANNED, "text", "large JSON file: not a model configuration")
        return
    raw = ctx.bytes()
    ctx.add_bytes_read(len(raw))
    try:
        doc = json.loads(raw)  # what transformers does: json.loads of the file's text
    except (ValueError, RecursionError):
        ctx.cover(CoverageStatus.SCANNED, "text", "not valid JSON: no loader reads it as a config")
        return
    refs = list(_auto_map_refs(doc, 0)) if isinstance(doc, dict) else []
    if not refs:
        ctx.cover(CoverageStatus.SCANNED, "text", "JSON configuration without auto_map")
        return
    here = os.path.dirname(ctx.fs_path) if ctx.fs_path and ctx.is_top_level else None
    for ref in refs:
        _report_ref(ctx, ref, here)
    ctx.cover(CoverageStatus.SCANNED, "hf-config", f"{len(refs)} auto_map reference(s)")


def _auto_map_refs(doc: object, depth: int) -> Iterator[_Ref]:
    if depth > _MAX_JSON_DEPTH or not isinstance(doc, dict):
        return
    for key, value in doc.items():
        if key == "auto_map" and isinstance(value, dict):
            for auto, target in value.items():
                items = target if isinstance(target, list) else [target]
                for item in items:
                    if isinstance(item, str) and item:
                        yield _Ref(str(auto), item)
        elif key == "custom_pipelines" and isinstance(value, dict):
            for task, spec in value.items():
                if isinstance(spec, dict) and isinstance(spec.get("impl"), str):
                    yield _Ref(f"pipeline {task}", spec["impl"])
        elif isinstance(value, dict):
            yield from _auto_map_refs(value, depth + 1)


def _report_ref(ctx: Context, ref: _Ref, here: str | None) -> None:
    repo, _, target = ref.value.rpartition("--")
    module, _, cls = target.rpartition(".")
    evidence = f"{ref.key} -> {ref.value}"
    if not module or not cls:
        ctx.finding(
            "MS600",
            f"auto_map entry {ref.key!r} is not a 'module.Class' reference: {ref.value!r}",
            evidence=evidence,
            severity=Severity.MEDIUM,
        )
        return
    file = module.replace(".", "/") + ".py"
    if repo:
        ctx.finding(
            "MS600",
            f"auto_map entry {ref.key!r} imports {file} from ANOTHER repository, {repo!r}, at "
            "load time (trust_remote_code=True): code not in this directory, not analysed, "
            "and it can change after this scan",
            evidence=evidence,
            severity=Severity.HIGH,
        )
        return
    if any(p in ("", "..") for p in file.split("/")) or "\\" in file or file.startswith("/"):
        ctx.finding(
            "MS600",
            f"auto_map entry {ref.key!r} names an unusual module path {module!r}",
            evidence=evidence,
            severity=Severity.HIGH,
        )
        return
    if here is None:
        ctx.finding(
            "MS600",
            f"auto_map entry {ref.key!r} imports {file} (class {cls}) with "
            "trust_remote_code=True; the file was not looked for (the configuration is not a "
            "file on disk)",
            evidence=evidence,
        )
    elif os.path.isfile(os.path.join(here, file)):
        ctx.finding(
            "MS600",
            f"auto_map entry {ref.key!r} imports {file} (class {cls}) from this directory with "
            "trust_remote_code=True; that file is analysed on its own",
            evidence=evidence,
        )
    else:
        ctx.finding(
            "MS600",
            f"auto_map entry {ref.key!r} imports {file} (class {cls}), which is NOT in this "
            "directory: transformers downloads it from the model's repository at load time "
            "and runs it unanalysed",
            evidence=evidence,
            severity=Severity.HIGH,
        )


# ---------------------------------------------------------------------------- python source


def _check_source(ctx: Context) -> None:
    size = ctx.size
    raw = ctx.bytes(0, min(size, MAX_SOURCE + 1))
    ctx.add_bytes_read(len(raw))
    ctx.finding(
        "MS601",
        "Python source in the model repository: imported and run by the loader with "
        "trust_remote_code=True when a configuration refers to it",
        evidence=ctx.name,
    )
    analysis = analyse_source(raw)
    if analysis.error is not None:
        _unparseable(ctx, raw, analysis.error)
        return
    lines = _LineOffsets(raw)
    reporter = _Reporter(ctx, lines)
    reporter.report(analysis, None)
    if analysis.truncated is not None or reporter.truncated:
        why = analysis.truncated or reporter.truncated or "nested payload not fully analysed"
        ctx.finding("MS606", f"part of the source was not analysed: {why}", evidence=ctx.name)
        ctx.cover(CoverageStatus.PARTIAL, "python-source", why)
        return
    ctx.cover(CoverageStatus.SCANNED, "python-source", f"{analysis.lines} lines, parsed as AST")


_MENTIONS = re.compile(
    r"\b(?:os\.system|os\.popen|subprocess|pty\.spawn|socket|urlopen|urllib|requests\.|httpx|"
    r"exec\s*\(|eval\s*\(|__import__|import_module|marshal|ctypes|b64decode|pickle\.loads?)"
)


def _unparseable(ctx: Context, raw: bytes, error: str) -> None:
    text = raw.decode("utf-8", "replace")
    mentions = sorted({m.group(0).rstrip("( \t") for m in _MENTIONS.finditer(text)})
    severity = Severity.HIGH if mentions else Severity.MEDIUM
    extra = f"; its text mentions {', '.join(mentions[:8])}" if mentions else ""
    ctx.finding(
        "MS606",
        f"Python source could not be analysed ({error}); another Python version may still "
        f"import and run it{extra}",
        severity=severity,
        evidence=ctx.name,
    )
    ctx.cover(CoverageStatus.INCONCLUSIVE, "python-source", error)


class _LineOffsets:
    def __init__(self, data: bytes) -> None:
        self.starts = [0]
        pos = data.find(b"\n")
        while pos != -1:
            self.starts.append(pos + 1)
            pos = data.find(b"\n", pos + 1)

    def offset(self, line: int) -> int | None:
        return self.starts[line - 1] if 1 <= line <= len(self.starts) else None


# ---------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class _Entry:
    rule: str
    severity: Severity
    what: str


_E = _Entry
_HI, _MED, _LO = Severity.HIGH, Severity.MEDIUM, Severity.LOW

_PROCESS = _E("MS602", _HI, "starts a process")
_NET = _E("MS603", _HI, "opens a network connection")
_HUB = _E("MS603", _MED, "downloads from the hub / the web")
_NATIVE = _E("MS605", _HI, "loads native code")
_DESER = _E("MS605", _HI, "deserialises objects (runs code from the data)")
_LOADMOD = _E("MS605", _HI, "loads and runs code from a file or another repository")

# Prefix entries: a resolved call name equal to the key or starting with key + "." or "(".
_CALLS: dict[str, _Entry] = {
    "os.system": _PROCESS,
    "os.popen": _PROCESS,
    "os.posix_spawn": _PROCESS,
    "os.posix_spawnp": _PROCESS,
    "os.startfile": _PROCESS,
    "os.fork": _E("MS602", _MED, "forks the process"),
    "os.forkpty": _PROCESS,
    "os.kill": _E("MS602", _MED, "signals another process"),
    "os.killpg": _E("MS602", _MED, "signals a process group"),
    "os.putenv": _E("MS602", _LO, "sets an environment variable"),
    "pty.spawn": _PROCESS,
    "pty.fork": _PROCESS,
    "subprocess": _PROCESS,
    "commands": _PROCESS,
    "popen2": _PROCESS,
    "platform.popen": _PROCESS,
    "asyncio.create_subprocess_exec": _PROCESS,
    "asyncio.create_subprocess_shell": _PROCESS,
    "pexpect": _PROCESS,
    "sh": _PROCESS,
    "plumbum": _PROCESS,
    "socket": _NET,
    "socketserver": _NET,
    "ssl.wrap_socket": _NET,
    "urllib.request": _NET,
    "urllib.urlopen": _NET,
    "urllib.urlretrieve": _NET,
    "urllib2": _NET,
    "http.client": _NET,
    "http.server": _NET,
    "httplib": _NET,
    "requests": _NET,
    "httpx": _NET,
    "aiohttp": _NET,
    "urllib3": _NET,
    "pycurl": _NET,
    "ftplib": _NET,
    "smtplib": _NET,
    "poplib": _NET,
    "imaplib": _NET,
    "telnetlib": _NET,
    "nntplib": _NET,
    "xmlrpc.client": _NET,
    "paramiko": _NET,
    "websocket": _NET,
    "websockets": _NET,
    "asyncio.open_connection": _NET,
    "asyncio.start_server": _NET,
    "webbrowser": _E("MS603", _MED, "opens a web browser"),
    "huggingface_hub": _HUB,
    "transformers.utils.cached_file": _HUB,
    "transformers.utils.hub": _HUB,
    "transformers.file_utils.cached_path": _HUB,
    "torch.hub.load_state_dict_from_url": _HUB,
    "torch.hub.download_url_to_file": _HUB,
    "torch.utils.model_zoo.load_url": _HUB,
    "torch.hub.load": _LOADMOD,
    "transformers.dynamic_module_utils": _LOADMOD,
    "builtins.exec": _E("MS605", _HI, "runs dynamically built code"),
    "builtins.eval": _E("MS605", _HI, "evaluates dynamically built code"),
    "builtins.compile": _E("MS605", _HI, "compiles dynamically built code"),
    "importlib.util.spec_from_file_location": _LOADMOD,
    "importlib.util.module_from_spec": _LOADMOD,
    "importlib.machinery.SourceFileLoader": _LOADMOD,
    "importlib.machinery.SourcelessFileLoader": _LOADMOD,
    "importlib.machinery.ExtensionFileLoader": _LOADMOD,
    "imp.load_source": _LOADMOD,
    "imp.load_module": _LOADMOD,
    "imp.load_dynamic": _LOADMOD,
    "runpy": _LOADMOD,
    "zipimport": _LOADMOD,
    "code.InteractiveInterpreter": _E("MS605", _HI, "runs an interpreter"),
    "code.InteractiveConsole": _E("MS605", _HI, "runs an interpreter"),
    "code.interact": _E("MS605", _HI, "runs an interpreter"),
    "marshal.loads": _E("MS605", _HI, "loads marshalled bytecode"),
    "marshal.load": _E("MS605", _HI, "loads marshalled bytecode"),
    "types.CodeType": _E("MS605", _HI, "builds a code object"),
    "types.FunctionType": _E("MS605", _HI, "builds a function from a code object"),
    "pickle.loads": _DESER,
    "pickle.load": _DESER,
    "pickle.Unpickler": _DESER,
    "_pickle": _DESER,
    "cPickle": _DESER,
    "dill": _DESER,
    "cloudpickle": _DESER,
    "joblib.load": _DESER,
    "shelve.open": _DESER,
    "yaml.unsafe_load": _DESER,
    "yaml.unsafe_load_all": _DESER,
    "ctypes": _E("MS605", _MED, "uses ctypes"),
    "ctypes.CDLL": _NATIVE,
    "ctypes.PyDLL": _NATIVE,
    "ctypes.WinDLL": _NATIVE,
    "ctypes.OleDLL": _NATIVE,
    "ctypes.cdll": _NATIVE,
    "ctypes.pydll": _NATIVE,
    "ctypes.windll": _NATIVE,
    "ctypes.oledll": _NATIVE,
    "ctypes.LibraryLoader": _NATIVE,
    "ctypes.pythonapi": _NATIVE,
    "ctypes.util.find_library": _NATIVE,
    "ctypes.cast": _NATIVE,
    "ctypes.memmove": _NATIVE,
    "ctypes.memset": _NATIVE,
    "ctypes.string_at": _NATIVE,
    "ctypes.CFUNCTYPE": _NATIVE,
    "_ctypes": _NATIVE,
    "cffi.FFI().dlopen": _NATIVE,
    "cffi.FFI().verify": _NATIVE,
    "torch.ops.load_library": _NATIVE,
    "torch.classes.load_library": _NATIVE,
    "torch.utils.cpp_extension.load": _E("MS605", _HI, "compiles and loads a C++/CUDA extension"),
    "torch.utils.cpp_extension.load_inline": _E(
        "MS605", _HI, "compiles and loads a C++/CUDA extension"
    ),
    "sys.settrace": _E("MS605", _MED, "installs a trace hook"),
    "sys.setprofile": _E("MS605", _MED, "installs a profile hook"),
    "sys.addaudithook": _E("MS605", _MED, "installs an audit hook"),
    "sys.path.insert": _E("MS605", _LO, "changes the module search path"),
    "sys.path.append": _E("MS605", _LO, "changes the module search path"),
    "sys.path.extend": _E("MS605", _LO, "changes the module search path"),
}

_CALL_EXCEPTIONS = frozenset(
    {
        "subprocess.CalledProcessError",
        "subprocess.TimeoutExpired",
        "subprocess.SubprocessError",
        "socket.gethostname",
        "socket.getfqdn",
        "requests.exceptions",
        "huggingface_hub.utils",
        "huggingface_hub.constants",
        "huggingface_hub.errors",
        "huggingface_hub.PyTorchModelHubMixin",
        "huggingface_hub.ModelHubMixin",
        "ctypes.c_",
        "ctypes.sizeof",
        "ctypes.POINTER",
        "ctypes.Structure",
        "ctypes.byref",
    }
)

_WRITE_CALLS: dict[str, str] = {
    "os.remove": "deletes a file",
    "os.unlink": "deletes a file",
    "os.rmdir": "deletes a directory",
    "os.removedirs": "deletes directories",
    "os.rename": "moves a file",
    "os.renames": "moves files",
    "os.replace": "replaces a file",
    "os.chmod": "changes file permissions",
    "os.lchmod": "changes file permissions",
    "os.chown": "changes file ownership",
    "os.lchown": "changes file ownership",
    "os.symlink": "creates a symbolic link",
    "os.link": "creates a hard link",
    "os.truncate": "truncates a file",
    "os.mkfifo": "creates a FIFO",
    "os.mknod": "creates a device node",
    "shutil.rmtree": "deletes a directory tree",
    "shutil.move": "moves files",
    "shutil.copy": "copies files",
    "shutil.copy2": "copies files",
    "shutil.copyfile": "copies files",
    "shutil.copytree": "copies a directory tree",
    "shutil.copymode": "changes file permissions",
    "shutil.chown": "changes file ownership",
    "shutil.unpack_archive": "extracts an archive",
    "shutil.make_archive": "writes an archive",
    "tarfile.open().extractall": "extracts an archive",
    "tarfile.open().extract": "extracts an archive",
    "tarfile.TarFile().extractall": "extracts an archive",
    "zipfile.ZipFile().extractall": "extracts an archive",
    "zipfile.ZipFile().extract": "extracts an archive",
    "pathlib.Path().write_text": "writes a file",
    "pathlib.Path().write_bytes": "writes a file",
    "pathlib.Path().unlink": "deletes a file",
    "pathlib.Path().rmdir": "deletes a directory",
    "pathlib.Path().chmod": "changes file permissions",
    "pathlib.Path().rename": "moves a file",
    "pathlib.Path().replace": "replaces a file",
    "pathlib.Path().symlink_to": "creates a symbolic link",
    "pathlib.Path().hardlink_to": "creates a hard link",
    "pathlib.Path().touch": "creates a file",
}
_OPENERS = frozenset(
    {"builtins.open", "io.open", "codecs.open", "os.fdopen", "pathlib.Path().open", "os.open"}
)
_SENSITIVE = re.compile(
    r"\.ssh\b|authorized_keys|id_rsa|id_ed25519|id_ecdsa|/etc/(?:passwd|shadow|sudoers|cron|"
    r"profile|hosts|ld\.so)|\.bashrc|\.bash_profile|\.zshrc|\.profile\b|\.aws/|\.netrc|"
    r"\.pypirc|\.docker/config|\.kube/config|\.git-credentials|\.gnupg|huggingface/token|"
    r"\.huggingface/|/proc/self/environ|site-packages|dist-packages|sitecustomize|"
    r"usercustomize|\.pth['\"]|\.config/gcloud|\.npmrc|\.config/autostart|LaunchAgents|"
    r"/etc/systemd|\.local/bin|crontab"
)
_SAVE_FUNCTION = re.compile(
    r"(?:^|_)(?:save|write|export|dump|to|store|push|serialize|convert)(?:_|$)", re.I
)
_SENSITIVE_ENV = re.compile(
    r"^(?:LD_PRELOAD|LD_LIBRARY_PATH|LD_AUDIT|DYLD_\w+|PATH|PYTHONPATH|PYTHONHOME|PYTHONSTARTUP|"
    r"PYTHONINSPECT|PYTHONUSERBASE|BASH_ENV|ENV|PROMPT_COMMAND|HF_ENDPOINT|HF_HUB_ENDPOINT|"
    r"HUGGINGFACE_CO_RESOLVE_ENDPOINT|HTTPS?_PROXY|https?_proxy|ALL_PROXY|REQUESTS_CA_BUNDLE|"
    r"SSL_CERT_FILE|SSL_CERT_DIR|CURL_CA_BUNDLE|PIP_INDEX_URL|PIP_EXTRA_INDEX_URL|"
    r"HF_TOKEN|HUGGING_FACE_HUB_TOKEN|TORCH_HOME|HF_HOME|TRANSFORMERS_CACHE)$"
)
_MONKEYPATCH_HIGH = ("builtins.",)
_MONKEYPATCH_MEDIUM = (
    "os.",
    "subprocess.",
    "socket.",
    "sys.meta_path",
    "sys.path_hooks",
    "sys.excepthook",
    "importlib.",
)


_CALLABLE_VALUES = frozenset(
    {
        "os.system",
        "os.popen",
        "os.posix_spawn",
        "os.posix_spawnp",
        "pty.spawn",
        "subprocess.Popen",
        "subprocess.run",
        "subprocess.call",
        "subprocess.check_call",
        "subprocess.check_output",
        "subprocess.getoutput",
        "subprocess.getstatusoutput",
        "builtins.exec",
        "builtins.eval",
        "marshal.loads",
        "pickle.loads",
        "ctypes.CDLL",
        "socket.create_connection",
        "urllib.request.urlopen",
        "urllib.request.urlretrieve",
        "requests.get",
        "requests.post",
    }
)
"""Callables that are reported when passed as values (``Thread(target=os.system)``)."""


def _lookup(name: str) -> _Entry | None:
    """The entry for a resolved call name: the longest dotted prefix with an entry.

    A method called on the result of a call (``subprocess.Popen().wait``) only matches an entry
    that names it exactly (``cffi.FFI().dlopen``): the call that produced the object is
    reported already.
    """
    if any(name == e or name.startswith(e) for e in _CALL_EXCEPTIONS):
        return None
    if "(" in name:
        return _CALLS.get(name)
    probe = name
    while True:
        entry = _CALLS.get(probe)
        if entry is not None:
            return entry
        cut = probe.rfind(".")
        if cut <= 0:
            return None
        probe = probe[:cut]


def _severity_when(severity: Severity, runs_at: RunsAt, *, bump_medium: bool = False) -> Severity:
    if runs_at is RunsAt.SCRIPT:
        return min(severity, Severity.LOW)
    if runs_at is RunsAt.IMPORT and (
        severity == Severity.HIGH or (bump_medium and severity == Severity.MEDIUM)
    ):
        return Severity(severity + 1)
    return severity


def _when(item: Call | Reference | Store) -> str:
    if item.context is RunsAt.IMPORT:
        via = f" (in {item.function}(), called on import)" if item.function else ""
        return f"runs on import{via}"
    if item.context is RunsAt.SCRIPT:
        return "only when the file is run as a script (__main__), never on import"
    return f"runs when {item.function}() is called" if item.function else "runs when called"


class _Reporter:
    def __init__(self, ctx: Context, lines: _LineOffsets) -> None:
        self.ctx = ctx
        self.lines = lines
        self.seen: set[tuple[str, int, str]] = set()
        self.truncated: str | None = None

    def emit(
        self,
        rule: str,
        severity: Severity,
        line: int,
        message: str,
        evidence: str,
        outer: Call | None,
    ) -> None:
        where = line if outer is None else outer.line
        if outer is not None:
            message = f"in code run by {outer.name} at line {outer.line}: {message}"
        key = (rule, where, evidence)
        if key in self.seen:
            return
        self.seen.add(key)
        self.ctx.finding(
            rule,
            f"line {where}: {message}",
            offset=self.lines.offset(where),
            severity=severity,
            evidence=evidence,
        )

    def report(self, analysis: SourceAnalysis, outer: Call | None) -> int:
        """Report everything in ``analysis``; returns the number of findings >= HIGH."""
        high = 0
        if analysis.error is not None and outer is not None:
            self.emit(
                "MS605",
                _severity_when(Severity.HIGH, outer.context),
                outer.line,
                f"payload could not be parsed ({analysis.error})",
                outer.reconstructed()[:200],
                None,
            )
            return 1
        if analysis.truncated is not None and outer is not None:
            self.truncated = analysis.truncated
        nested = {id(c): a for c, a in analysis.nested}
        for call in analysis.calls:
            inner = nested.get(id(call))
            high += self._call(call, outer, inner)
        for ref in analysis.references:
            high += self._reference(ref, outer)
        for store in analysis.stores:
            high += self._store(store, outer)
        return high

    # ------------------------------------------------------------------ calls
    def _evidence(self, call: Call) -> str:
        rec = call.reconstructed()
        return rec if rec == call.text else f"{rec}  [as written: {call.text}]"

    def _call(self, call: Call, outer: Call | None, inner: SourceAnalysis | None) -> int:
        name = call.name
        if name is None:
            return 0
        sev_entry = self._classify(call)
        if sev_entry is None:
            return 0
        rule, severity, what, bump_medium = sev_entry
        if inner is not None:
            # A constant payload: analyse it; the exec itself is HIGH only when the payload does
            # something (or could not be analysed).
            inner_high = self.report(inner, call)
            if inner_high == 0 and inner.error is None:
                severity = Severity.MEDIUM
                what += " (a constant payload, analysed: nothing notable)"
        severity = _severity_when(severity, call.context, bump_medium=bump_medium)
        self.emit(
            rule,
            severity,
            call.line,
            f"{what}: {name} ({_when(call)})",
            self._evidence(call),
            outer,
        )
        return 1 if severity >= Severity.HIGH else 0

    def _classify(self, call: Call) -> tuple[str, Severity, str, bool] | None:
        name = call.name or ""
        if name in _OPENERS:
            return self._open(call)
        if name in ("builtins.__import__", "importlib.import_module", "importlib.__import__"):
            return self._dynamic_import(call)
        if (
            name == "builtins.setattr"
            and call.arg_text
            and call.arg_text[0]
            in (
                "builtins",
                "__builtins__",
            )
        ):
            return ("MS605", Severity.HIGH, "replaces a builtin", False)
        if name == "torch.load":
            text = " ".join(t for _, _, t in call.keywords)
            if re.search(r"weights_only\s*=\s*True", text):
                return None
            if "weights_only" in text:
                return ("MS605", Severity.HIGH, "unpickles a file (weights_only=False)", False)
            return (
                "MS605",
                Severity.LOW,
                "unpickles a file (torch.load; weights_only defaults to True since torch 2.6)",
                False,
            )
        if name in ("numpy.load", "np.load"):
            text = " ".join(t for _, _, t in call.keywords)
            if re.search(r"allow_pickle\s*=\s*True", text):
                return ("MS605", Severity.MEDIUM, "loads object arrays (allow_pickle=True)", False)
            return None
        if name in ("yaml.load", "yaml.load_all"):
            text = " ".join(t for _, _, t in call.keywords) + " ".join(call.arg_text[1:])
            if re.search(r"Safe|CSafe|BaseLoader", text):
                return None
            return ("MS605", Severity.MEDIUM, "loads YAML with a loader that builds objects", False)
        if name in _WRITE_CALLS:
            return self._write(call, _WRITE_CALLS[name])
        if name == "os.environ.update" or name == "os.environ.setdefault" or name == "os.putenv":
            key = call.args[0] if call.args else None
            if isinstance(key, str) and _SENSITIVE_ENV.match(key):
                return ("MS602", Severity.HIGH, f"sets the {key} environment variable", False)
            if name != "os.putenv":
                keys = " ".join(call.arg_text + tuple(t for _, _, t in call.keywords))
                hits = [w for w in re.findall(r"\w+", keys) if _SENSITIVE_ENV.match(w)]
                if hits:
                    return (
                        "MS602",
                        Severity.HIGH,
                        f"sets the {hits[0]} environment variable",
                        False,
                    )
            return None
        entry = _lookup(name)
        if entry is None:
            return None
        what = entry.what
        if entry is _PROCESS or entry.rule == "MS602":
            text = " ".join(t for _, _, t in call.keywords)
            if re.search(r"shell\s*=\s*True", text):
                what += " through a shell (shell=True)"
        return (entry.rule, entry.severity, what, False)

    def _open(self, call: Call) -> tuple[str, Severity, str, bool] | None:
        present, mode = call.keyword("mode")
        mode_text = ""
        if not present and call.name == "os.open":
            mode_text = call.arg_text[1] if len(call.arg_text) > 1 else ""
            kw = [t for k, _, t in call.keywords if k == "flags"]
            mode_text = kw[0] if kw else mode_text
        elif not present:
            index = 0 if call.name == "pathlib.Path().open" else 1
            mode = call.args[index] if len(call.args) > index else None
            present = len(call.args) > index
        path_text = call.text
        sensitive = bool(_SENSITIVE.search(path_text)) or any(
            isinstance(a, str) and _SENSITIVE.search(a) for a in call.args[:1]
        )
        if call.name == "os.open":
            writes = bool(re.search(r"O_(?:WRONLY|RDWR|CREAT|APPEND|TRUNC)", mode_text))
            unknown = not writes and not re.search(r"O_RDONLY", mode_text)
        elif present:
            writes = isinstance(mode, str) and any(c in mode for c in "wax+")
            unknown = not isinstance(mode, str)
        else:
            writes, unknown = False, False
        if sensitive:
            verb = "writes" if writes else "opens"
            return ("MS604", Severity.HIGH, f"{verb} a sensitive file", False)
        if writes:
            return self._write(call, "opens a file for writing")
        if unknown:
            return ("MS604", Severity.LOW, "opens a file with a mode computed at run time", False)
        return None

    def _write(self, call: Call, what: str) -> tuple[str, Severity, str, bool]:
        if _SENSITIVE.search(call.text) or any(
            isinstance(a, str) and _SENSITIVE.search(a) for a in call.args
        ):
            return ("MS604", Severity.HIGH, f"{what} (sensitive path)", False)
        if (
            call.context is RunsAt.FUNCTION
            and call.function
            and _SAVE_FUNCTION.search(call.function.rsplit(".", 1)[-1])
        ):
            return ("MS604", Severity.LOW, f"{what} in a save/export function", False)
        return ("MS604", Severity.MEDIUM, what, True)

    def _dynamic_import(self, call: Call) -> tuple[str, Severity, str, bool] | None:
        if not call.args:
            return None
        target = call.args[0]
        if isinstance(target, str):
            return None  # resolved: what it imports is tracked where it is used
        first = call.arg_text[0] if call.arg_text else ""
        package = len(call.args) > 1 or call.keyword("package")[0]
        relative = re.match(r"""^(?:f?["']\.|["']\.["']\s*\+)""", first) is not None
        if call.name == "importlib.import_module" and (relative or package):
            return ("MS605", Severity.LOW, "imports a submodule chosen at run time", False)
        return (
            "MS605",
            Severity.HIGH,
            "imports a module whose name is computed at run time",
            False,
        )

    # ------------------------------------------------------------------ values and stores
    def _reference(self, ref: Reference, outer: Call | None) -> int:
        if ref.name not in _CALLABLE_VALUES and not ref.name.startswith(("os.exec", "os.spawn")):
            return 0
        entry = _lookup(ref.name)
        if entry is None:
            return 0
        severity = _severity_when(entry.severity, ref.context)
        self.emit(
            entry.rule,
            severity,
            ref.line,
            f"refers to {ref.name} as a value (it {entry.what} when called; {_when(ref)})",
            ref.text,
            outer,
        )
        return 1 if severity >= Severity.HIGH else 0

    def _store(self, store: Store, outer: Call | None) -> int:
        t = store.target
        if t.startswith("os.environ["):
            key = t[len("os.environ[") : -1].strip("'\"")
            if _SENSITIVE_ENV.match(key):
                rule, severity, what = (
                    "MS602",
                    Severity.HIGH,
                    f"sets the {key} environment variable",
                )
            else:
                return 0
        elif t.startswith(_MONKEYPATCH_HIGH):
            rule, severity, what = "MS605", Severity.HIGH, f"replaces {t}"
        elif t.startswith(_MONKEYPATCH_MEDIUM):
            rule, severity, what = "MS605", Severity.MEDIUM, f"replaces {t}"
        else:
            return 0
        severity = _severity_when(severity, store.context)
        self.emit(rule, severity, store.line, f"{what} ({_when(store)})", store.text, outer)
        return 1 if severity >= Severity.HIGH else 0
