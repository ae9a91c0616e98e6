"""Tests for the policy layer: data files, normalisation, precedence and user overrides."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import pickle
import tomllib
import uuid
from dataclasses import replace
from importlib import resources
from typing import Any

import pytest

from modelshield.errors import PolicyError
from modelshield.findings import Severity
from modelshield.policy import (
    DANGEROUS_CATEGORIES,
    Classification,
    Policy,
    PolicyEntry,
    Verdict,
    is_exact_pattern,
    load_aliases,
    load_entries,
)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.default()


def _data(name: str) -> str:
    return resources.files("modelshield.policy").joinpath("data", name).read_text("utf-8")


def _verdict(policy: Policy, name: str) -> Verdict:
    return policy.classify(name).verdict


# --------------------------------------------------------------------------------------------
# Data files


def test_default_is_cached() -> None:
    assert Policy.default() is Policy.default()


def test_every_entry_has_reason_and_valid_fields(policy: Policy) -> None:
    assert len(policy.allowed_entries) > 150
    assert len(policy.dangerous_entries) > 300
    for entry in policy.allowed_entries:
        assert entry.reason.strip(), entry
        assert entry.category.strip(), entry
        assert entry.severity is Severity.INFO, entry
        assert entry.origin == "builtin"
    for entry in policy.dangerous_entries:
        assert entry.reason.strip(), entry
        assert entry.category in DANGEROUS_CATEGORIES, entry
        assert entry.severity >= Severity.LOW, entry
        assert entry.cwe is None or entry.cwe > 0, entry
        if entry.source is not None:
            assert entry.source.strip(), entry


def test_patterns_unique_per_file(policy: Policy) -> None:
    for entries in (policy.allowed_entries, policy.dangerous_entries):
        patterns = [e.pattern for e in entries]
        assert len(patterns) == len(set(patterns))


def test_data_files_are_valid_toml_with_schema_1() -> None:
    for name in ("allowlist.toml", "dangerous.toml", "aliases.toml"):
        assert tomllib.loads(_data(name))["schema"] == 1


def test_no_exact_allowed_name_is_shadowed_by_a_dangerous_entry(policy: Policy) -> None:
    for entry in policy.allowed_entries:
        if entry.exact:
            result = policy.classify(entry.pattern)
            assert result.verdict is Verdict.ALLOWED, (entry.pattern, result.entry)


def test_every_exact_dangerous_name_classifies_dangerous(policy: Policy) -> None:
    for entry in policy.dangerous_entries:
        if entry.exact:
            result = policy.classify(entry.pattern)
            assert result.verdict is Verdict.DANGEROUS, entry.pattern
            assert result.entry is not None
            assert result.entry.severity >= entry.severity


def test_code_execution_and_process_entries_are_serious(policy: Policy) -> None:
    for entry in policy.dangerous_entries:
        if entry.category in ("code-execution", "process", "native-code", "deserialization"):
            assert entry.severity >= Severity.MEDIUM, entry.pattern


# --------------------------------------------------------------------------------------------
# Classification

BENIGN = [
    "functools.partial",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._tensor._rebuild_from_type_v2",
    "torch.FloatStorage",
    "torch.BFloat16Storage",
    "torch.cuda.HalfStorage",
    "torch.storage.UntypedStorage",
    "torch.float32",
    "torch.bfloat16",
    "torch.Size",
    "torch.device",
    "torch.strided",
    "torch.serialization._get_layout",
    "torch.nn.parameter.Parameter",
    "torch.nn.modules.linear.Linear",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.float64",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._mt19937.MT19937",
    "collections.OrderedDict",
    "collections.defaultdict",
    "copyreg._reconstructor",
    "copy_reg._reconstructor",
    "copyreg.__newobj__",
    "_codecs.encode",
    "codecs.encode",
    "builtins.set",
    "__builtin__.set",
    "__builtin__.xrange",
    "builtins.bytearray",
    "datetime.datetime",
    "decimal.Decimal",
    "uuid.UUID",
    "re._compile",
    "pathlib.PosixPath",
    "argparse.Namespace",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.tree._tree.Tree",
    "sklearn.pipeline.Pipeline",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "scipy.sparse._csr.csr_matrix",
    "scipy.sparse.csr.csr_matrix",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    "pandas.core.frame.DataFrame",
    "xgboost.core.Booster",
]


@pytest.mark.parametrize("name", BENIGN)
def test_benign_names_are_allowed(policy: Policy, name: str) -> None:
    result = policy.classify(name)
    assert result.verdict is Verdict.ALLOWED, result
    assert result.entry is not None and result.entry.reason


MALICIOUS = [
    "os.system",
    "posix.system",
    "nt.system",
    "os.popen",
    "os.execv",
    "os.remove",
    "os.putenv",
    "subprocess.Popen",
    "subprocess.run",
    "commands.getoutput",
    "builtins.eval",
    "builtins.exec",
    "__builtin__.eval",
    "__builtins__.exec",
    "builtins.__import__",
    "builtins.open",
    "builtins.getattr",
    "_pickle.loads",
    "cPickle.loads",
    "pickle.loads",
    "marshal.loads",
    "torch.load",
    "torch.serialization.load",
    "torch.storage._load_from_bytes",
    "torch.hub.load",
    "torch.jit.load",
    "torch.fx.graph_module.reduce_graph_module",
    "sklearn.utils._testing.assert_run_python_script_without_output",
    "numpy.testing._private.utils.runstring",
    "numpy.load",
    "numpy.f2py.crackfortran.getlincoef",
    "numpy.ndarray.tofile",
    "httplib.HTTPSConnection",
    "http.client.HTTPSConnection",
    "socket.create_connection",
    "_socket.socket",
    "requests.api.get",
    "urllib.request.urlopen",
    "urllib2.urlopen",
    "ctypes.CDLL",
    "_ctypes.dlopen",
    "_io.FileIO",
    "io.open",
    "shutil.rmtree",
    "pathlib.Path.write_text",
    "pathlib.PosixPath.unlink",
    "_operator.attrgetter",
    "operator.methodcaller",
    "_functools.reduce",
    "types.CodeType",
    "types.FunctionType",
    "importlib.import_module",
    "pip.main",
    "dill._dill._create_code",
    "cloudpickle.cloudpickle._make_function",
    "pandas.read_pickle",
    "thread.start_new_thread",
    # attribute traversal below an allowed callable
    "torch._utils._rebuild_tensor_v2.__globals__",
    "collections.OrderedDict.__class__.__subclasses__",
]


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_names_are_dangerous(policy: Policy, name: str) -> None:
    result = policy.classify(name)
    assert result.verdict is Verdict.DANGEROUS, result
    assert result.entry is not None and result.entry.reason


ADVISORY_CALLABLES = {
    "torch.utils.bottleneck.__main__.run_cprofile": "GHSA-4r9r-ch6f-vxmx",
    "torch.utils.bottleneck.__main__.run_autograd_prof": "GHSA-4whj-rm5r-c2v8",
    "torch._dynamo.guards.GuardBuilder.get": "GHSA-86cj-95qr-2p4f",
    "torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression": (
        "GHSA-f4x7-rfwp-v3xw"
    ),
    "torch.utils.collect_env.run": "GHSA-f745-w6jp-hpxx",
    "torch.utils.collect_env.run_and_read_all": "GHSA-jhph-76pp-mggw",
    "torch.utils.data.datapipes.utils.decoder.basichandlers": "GHSA-h3qp-7fh3-f8h4",
    "torch.jit.unsupported_tensor_ops.execWrapper": "GHSA-vr7h-p6mm-wpmh",
    "torch.utils._config_module.ConfigModule.load_config": "GHSA-vv6j-3g6g-2pvj",
    "trace.Trace.run": "GHSA-5qwp-399c-mjwf",
    "trace.Trace.runctx": "GHSA-g344-hcph-8vgg",
    "profile.Profile.run": "GHSA-x696-vm39-cp64",
    "profile.Profile.runctx": "GHSA-6vqj-c2q5-j97w",
    "profile.run": "GHSA-7wx9-6375-f5wh",
    "lib2to3.pgen2.grammar.Grammar.loads": "GHSA-f54q-57x4-jg88",
    "lib2to3.pgen2.pgen.ParserGenerator.make_label": "GHSA-p9w7-82w4-7q8m",
    "idlelib.debugobj.ObjectTreeItem.SetText": "GHSA-3vg9-h568-4w9m",
    "idlelib.autocomplete.AutoComplete.get_entity": "GHSA-6w4w-5w54-rjvr",
    "idlelib.autocomplete.AutoComplete.fetch_completions": "GHSA-7cq8-mj8x-j263",
    "code.InteractiveInterpreter.runcode": "GHSA-cj3c-v495-4xqh",
    "idlelib.calltip.Calltip.fetch_tip": "GHSA-8r4j-24qv-fmq9",
    "idlelib.calltip.get_entity": "GHSA-9xph-j2h6-g47v",
    "ensurepip._run_pip": "GHSA-xp4f-hrf8-rxw7",
    "idlelib.run.Executive.runcode": "GHSA-m869-42cg-3xwr",
    "idlelib.pyshell.ModifiedInterpreter.runcommand": "GHSA-j343-8v2j-ff7w",
    "idlelib.pyshell.ModifiedInterpreter.runcode": "GHSA-3gf5-cxq9-w223",
    "doctest.debug_script": "GHSA-fqq6-7vqf-w3fg",
    "cProfile.runctx": "GHSA-9w88-8rmg-7g2p",
    "cProfile.run": "GHSA-49gj-c84q-6qm9",
    "asyncio.unix_events._UnixSubprocessTransport._start": "GHSA-q77w-mwjj-7mqx",
    "asyncio.subprocess.create_subprocess_shell": "GHSA-f7qq-56ww-84cr",
    "distutils.file_util.write_file": "GHSA-m273-6v24-x4m4",
    "ctypes.CDLL": "GHSA-4675-36f9-wf6r",
    "pydoc.locate": "GHSA-84r2-jw7c-4r5q",
    "pty.spawn": "GHSA-vqmv-47xg-9wpr",
    "numpy.f2py.crackfortran.getlincoef": "GHSA-r8g5-cgf2-4m4m",
    "_operator.methodcaller": "GHSA-955r-x9j8-7rhh",
    "_operator.attrgetter": "GHSA-46h3-79wf-xr6c",
    "pkgutil.resolve_name": "GHSA-vvpj-8cmc-gx39",
    "uuid._get_command_stdout": "GHSA-g38g-8gr9-h9xp",
    "imaplib.IMAP4_stream": "GHSA-g38g-8gr9-h9xp",
    "_osx_support._read_output": "GHSA-g38g-8gr9-h9xp",
    "_aix_support._read_cmd_output": "GHSA-g38g-8gr9-h9xp",
    "_pyrepl.pager.pipe_pager": "GHSA-g38g-8gr9-h9xp",
    "codeop.compile_command": "GHSA-g38g-8gr9-h9xp",
    "runpy.run_path": "GHSA-wfq2-52f7-7qvj",
    "multiprocessing.util.spawnv_passfds": "GHSA-q5qq-mvfm-j35x",
    "marshal.loads": "GHSA-565g-hwwr-4pp3",
    "pip.main": "CVE-2025-1716",
    "logging.FileHandler": "CVE-2026-56304",
    "smtplib.SMTP": "GHSA-mxhj-88fx-4pcv",
}


@pytest.mark.parametrize(("name", "advisory"), sorted(ADVISORY_CALLABLES.items()))
def test_published_bypass_callables_are_dangerous_and_cited(
    policy: Policy, name: str, advisory: str
) -> None:
    result = policy.classify(name)
    assert result.verdict is Verdict.DANGEROUS
    assert result.entry is not None
    assert result.entry.severity >= Severity.HIGH
    assert result.entry.source is not None and advisory in result.entry.source


@pytest.mark.parametrize(
    "name",
    [
        "builtins.print",
        "mypkg.Thing",
        "__main__.Net",
        "os.path.join",
        "posixpath.join",
        "collections.namedtuple",
        "torch.float_power",
        "sklearn.linear_model._logistic.LogisticRegression.fit",
        "torch.nn.modules.linear.Linear.forward",
        "urllib.parse.quote",
    ],
)
def test_unknown_names(policy: Policy, name: str) -> None:
    assert policy.classify(name) == Classification(Verdict.UNKNOWN, None)


def test_os_catch_all_is_lower_severity(policy: Policy) -> None:
    result = policy.classify("os.getcwd")
    assert result.verdict is Verdict.DANGEROUS
    assert result.entry is not None and result.entry.severity is Severity.MEDIUM
    system = policy.classify("os.system").entry
    assert system is not None and system.severity is Severity.CRITICAL


def test_most_severe_dangerous_entry_wins(policy: Policy) -> None:
    entry = policy.classify("torch.jit.unsupported_tensor_ops.execWrapper").entry
    assert entry is not None
    assert entry.pattern == "torch.jit.unsupported_tensor_ops.execWrapper"
    assert entry.severity is Severity.CRITICAL


# --------------------------------------------------------------------------------------------
# Aliases


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("posix.system", "os.system"),
        ("nt.system", "os.system"),
        ("posixpath.join", "os.path.join"),
        ("ntpath.join", "os.path.join"),
        ("genericpath.exists", "os.path.exists"),
        ("_pickle.loads", "pickle.loads"),
        ("cPickle.loads", "pickle.loads"),
        ("__builtin__.eval", "builtins.eval"),
        ("__builtins__.eval", "builtins.eval"),
        ("_io.FileIO", "io.FileIO"),
        ("_operator.attrgetter", "operator.attrgetter"),
        ("_functools.partial", "functools.partial"),
        ("_codecs.encode", "codecs.encode"),
        ("_socket.socket", "socket.socket"),
        ("thread.start_new_thread", "_thread.start_new_thread"),
        ("copy_reg._reconstructor", "copyreg._reconstructor"),
        ("httplib.HTTPConnection", "http.client.HTTPConnection"),
        ("__builtin__.xrange", "builtins.range"),
        ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"),
        ("posix", "os"),
    ],
)
def test_aliases_normalise(policy: Policy, alias: str, canonical: str) -> None:
    assert policy.normalize(alias) == canonical
    assert policy.classify(alias) == policy.classify(canonical)


def test_alias_prefix_needs_a_dot(policy: Policy) -> None:
    # "ntpath" starts with "nt" but is not the nt module; "posixmodule" likewise.
    assert policy.normalize("ntpath.join") == "os.path.join"
    assert policy.normalize("posixfoo.bar") == "posixfoo.bar"


def test_load_aliases_rejects_bad_tables() -> None:
    with pytest.raises(PolicyError):
        load_aliases("[modules]\nposix = 3\n")
    with pytest.raises(PolicyError):
        load_aliases("[other]\n")


# --------------------------------------------------------------------------------------------
# User overrides


def _user(pattern: str) -> PolicyEntry:
    return PolicyEntry(
        pattern=pattern,
        reason="needed by our model",
        category="user",
        severity=Severity.INFO,
        origin="pyproject.toml",
    )


def test_with_allowed_returns_new_policy(policy: Policy) -> None:
    extended = policy.with_allowed([_user("mypkg.Thing")])
    assert extended is not policy
    assert _verdict(policy, "mypkg.Thing") is Verdict.UNKNOWN
    result = extended.classify("mypkg.Thing")
    assert result.verdict is Verdict.ALLOWED
    assert result.entry is not None and result.entry.origin == "pyproject.toml"
    assert len(extended.allowed_entries) == len(policy.allowed_entries) + 1


def test_user_wildcard_allows_unknown_names(policy: Policy) -> None:
    extended = policy.with_allowed([_user("mypkg.*")])
    assert _verdict(extended, "mypkg.models.Net") is Verdict.ALLOWED


def test_user_exact_entry_overrides_dangerous(policy: Policy) -> None:
    extended = policy.with_allowed([_user("torch.distributed.tensor.DTensor")])
    assert _verdict(policy, "torch.distributed.tensor.DTensor") is Verdict.DANGEROUS
    assert _verdict(extended, "torch.distributed.tensor.DTensor") is Verdict.ALLOWED
    # Only that exact name: its neighbours stay dangerous.
    assert _verdict(extended, "torch.distributed.rpc.rpc_sync") is Verdict.DANGEROUS


def test_user_exact_entry_matches_aliases(policy: Policy) -> None:
    extended = policy.with_allowed([_user("posix.getpid")])
    assert _verdict(extended, "os.getpid") is Verdict.ALLOWED
    assert _verdict(extended, "nt.getpid") is Verdict.ALLOWED


def test_user_wildcard_does_not_override_dangerous(policy: Policy) -> None:
    extended = policy.with_allowed([_user("os.*"), _user("torch.*"), _user("b*")])
    assert _verdict(extended, "os.system") is Verdict.DANGEROUS
    assert _verdict(extended, "torch.load") is Verdict.DANGEROUS
    assert _verdict(extended, "os.path.join") is Verdict.ALLOWED
    assert _verdict(extended, "builtins.eval") is Verdict.DANGEROUS
    assert _verdict(extended, "builtins.print") is Verdict.ALLOWED


def test_with_allowed_validates(policy: Policy) -> None:
    with pytest.raises(PolicyError):
        policy.with_allowed([replace(_user("mypkg.Thing"), reason="  ")])
    with pytest.raises(PolicyError):
        policy.with_allowed([_user("bad name")])
    with pytest.raises(PolicyError):
        policy.with_allowed([_user("*")])  # would allow everything


def test_is_exact_pattern() -> None:
    assert is_exact_pattern("os.system")
    assert not is_exact_pattern("os.*")
    assert not is_exact_pattern("os.?ystem")
    assert not is_exact_pattern("sklearn.*.[A-Z]*")


# --------------------------------------------------------------------------------------------
# Caching


def test_classification_is_cached() -> None:
    fresh = Policy.default().with_allowed([])
    names = [f"pkg{i % 500}.mod.Class{i}" for i in range(10_000)]
    first = [fresh.classify(n) for n in names]
    assert fresh.cache_size() == len(set(names))
    second = [fresh.classify(n) for n in names]
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert fresh.cache_size() == len(set(names))


# --------------------------------------------------------------------------------------------
# Loader schema

_GOOD = """
schema = 1
[[group]]
name = "g"
category = "process"
severity = "critical"
cwe = 78
entries = [
  { pattern = "foo.run", reason = "runs things" },
  { pattern = "foo.*", reason = "other foo", severity = "low", exclude = ["foo.safe"] },
]
"""


def test_load_entries_applies_group_defaults() -> None:
    entries = load_entries(_GOOD, "dangerous", origin="test.toml")
    assert entries[0] == PolicyEntry(
        pattern="foo.run",
        reason="runs things",
        category="process",
        severity=Severity.CRITICAL,
        cwe=78,
        origin="test.toml",
    )
    assert entries[1].severity is Severity.LOW
    assert entries[1].exclude == ("foo.safe",)
    policy = Policy(allowed=(), dangerous=entries)
    assert _verdict(policy, "foo.safe") is Verdict.UNKNOWN
    assert policy.classify("foo.run").entry == entries[0]


def test_allowed_entries_default_to_info() -> None:
    text = '[[group]]\ncategory = "user"\nentries = [{ pattern = "a.B", reason = "data" }]\n'
    (entry,) = load_entries(text, "allowed")
    assert entry.severity is Severity.INFO


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        # missing reason
        (
            '[[group]]\ncategory = "process"\nseverity = "high"\nentries = [{ pattern = "a.b" }]\n',
            "dangerous",
        ),
        # empty reason
        (
            '[[group]]\ncategory = "process"\nseverity = "high"\n'
            'entries = [{ pattern = "a.b", reason = " " }]\n',
            "dangerous",
        ),
        # missing pattern
        (
            '[[group]]\ncategory = "process"\nseverity = "high"\nentries = [{ reason = "x" }]\n',
            "dangerous",
        ),
        # unknown dangerous category
        (
            '[[group]]\ncategory = "weird"\nseverity = "high"\n'
            'entries = [{ pattern = "a.b", reason = "x" }]\n',
            "dangerous",
        ),
        # dangerous entry without severity
        (
            '[[group]]\ncategory = "process"\nentries = [{ pattern = "a.b", reason = "x" }]\n',
            "dangerous",
        ),
        # dangerous entry with severity info
        (
            '[[group]]\ncategory = "process"\nseverity = "info"\n'
            'entries = [{ pattern = "a.b", reason = "x" }]\n',
            "dangerous",
        ),
        # allowed entry with a non-info severity
        (
            '[[group]]\ncategory = "user"\nseverity = "high"\n'
            'entries = [{ pattern = "a.b", reason = "x" }]\n',
            "allowed",
        ),
        # bad severity name
        (
            '[[group]]\ncategory = "process"\nseverity = "huge"\n'
            'entries = [{ pattern = "a.b", reason = "x" }]\n',
            "dangerous",
        ),
        # bad cwe
        (
            '[[group]]\ncategory = "process"\nseverity = "high"\ncwe = "78"\n'
            'entries = [{ pattern = "a.b", reason = "x" }]\n',
            "dangerous",
        ),
        # empty source
        (
            '[[group]]\ncategory = "process"\nseverity = "high"\n'
            'entries = [{ pattern = "a.b", reason = "x", source = "" }]\n',
            "dangerous",
        ),
        # unknown entry key
        (
            '[[group]]\ncategory = "user"\n'
            'entries = [{ pattern = "a.b", reason = "x", oops = 1 }]\n',
            "allowed",
        ),
        # unknown group key
        (
            '[[group]]\ncategory = "user"\noops = 1\n'
            'entries = [{ pattern = "a.b", reason = "x" }]\n',
            "allowed",
        ),
        # unknown top-level key
        ("oops = 1\n", "allowed"),
        # empty entries
        ('[[group]]\ncategory = "user"\nentries = []\n', "allowed"),
        # duplicate pattern
        (
            '[[group]]\ncategory = "user"\nentries = [{ pattern = "a.b", reason = "x" },'
            ' { pattern = "a.b", reason = "y" }]\n',
            "allowed",
        ),
        # pattern matching everything
        ('[[group]]\ncategory = "user"\nentries = [{ pattern = "*", reason = "x" }]\n', "allowed"),
        # malformed dotted name
        (
            '[[group]]\ncategory = "user"\nentries = [{ pattern = "a..b", reason = "x" }]\n',
            "allowed",
        ),
        # unsupported schema
        ("schema = 2\n", "allowed"),
        # not TOML
        ("[[group]\n", "allowed"),
    ],
)
def test_malformed_policy_raises(text: str, kind: str) -> None:
    with pytest.raises(PolicyError):
        load_entries(text, kind)


def test_unknown_kind_raises() -> None:
    with pytest.raises(PolicyError):
        load_entries(_GOOD, "maybe")


# --------------------------------------------------------------------------------------------
# Real benign pickles: every global they reference must be allowed


class _Recorder(pickle.Unpickler):
    """Loads our own benign pickles and records every global the stream resolves."""

    def __init__(self, data: bytes) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.names: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        self.names.append(f"{module}.{name}")
        return super().find_class(module, name)


def _globals_of(obj: object) -> set[str]:
    names: set[str] = set()
    for protocol in (0, 2, 4, 5):
        recorder = _Recorder(pickle.dumps(obj, protocol=protocol))
        recorder.load()
        names.update(recorder.names)
    return names


def _assert_all_allowed(policy: Policy, names: set[str]) -> None:
    assert names
    bad = {n: policy.classify(n).verdict for n in names}
    bad = {n: v for n, v in bad.items() if v is not Verdict.ALLOWED}
    assert not bad, bad


def test_stdlib_values_pickle_with_allowed_globals(policy: Policy) -> None:
    values: list[object] = [
        collections.OrderedDict(a=1),
        collections.defaultdict(list, a=[1]),
        collections.deque([1, 2]),
        collections.Counter("abc"),
        datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
        datetime.timedelta(days=1),
        datetime.date(2024, 1, 1),
        decimal.Decimal("1.5"),
        fractions.Fraction(1, 3),
        uuid.UUID(int=7),
        {1, 2},
        frozenset({3}),
        bytearray(b"xy"),
        b"bytes",
        complex(1, 2),
        slice(1, 5, 2),
        range(3),
    ]
    for value in values:
        _assert_all_allowed(policy, _globals_of(value))


def test_numpy_values_pickle_with_allowed_globals(policy: Policy) -> None:
    np = pytest.importorskip("numpy")
    values: list[object] = [
        np.arange(6).reshape(2, 3),
        np.array(["a", None], dtype=object),
        np.float64(1.5),
        np.int8(3),
        np.dtype("f4"),
        np.ma.masked_array([1, 2], mask=[0, 1]),
        np.random.default_rng(0),
        np.random.RandomState(0),
    ]
    for value in values:
        _assert_all_allowed(policy, _globals_of(value))


def test_sklearn_models_pickle_with_allowed_globals(policy: Policy) -> None:
    np = pytest.importorskip("numpy")
    pytest.importorskip("sklearn")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    x = rng.random((20, 3))
    y = np.array([0, 1] * 10)
    models: list[object] = [
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
        DecisionTreeClassifier().fit(x, y),
        RandomForestClassifier(n_estimators=2).fit(x, y),
        OneHotEncoder().fit([["a"], ["b"]]),
    ]
    for model in models:
        _assert_all_allowed(policy, _globals_of(model))


def test_scipy_sparse_pickles_with_allowed_globals(policy: Policy) -> None:
    np = pytest.importorskip("numpy")
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.eye(3)
    for value in (sparse.csr_matrix(dense), sparse.coo_array(dense)):
        _assert_all_allowed(policy, _globals_of(value))


def test_joblib_dump_uses_allowed_globals(
    policy: Policy, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    np = pytest.importorskip("numpy")
    joblib = pytest.importorskip("joblib")
    from joblib import numpy_pickle

    names: list[str] = []
    original = numpy_pickle.NumpyUnpickler.find_class

    def recording(self: Any, module: str, name: str) -> Any:
        names.append(f"{module}.{name}")
        return original(self, module, name)

    monkeypatch.setattr(numpy_pickle.NumpyUnpickler, "find_class", recording)
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": np.arange(10.0)}, path)
    joblib.load(path)
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in names
    _assert_all_allowed(policy, set(names))


def test_json_mirror_is_up_to_date() -> None:
    """The shipped JSON mirror matches the TOML data (regenerate: python -m modelshield.policy)."""
    from modelshield.policy.model import _MIRROR, compile_mirror

    assert _MIRROR.read_text(encoding="utf-8") == compile_mirror()
