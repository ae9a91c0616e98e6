"""Unit tests of the symbolic machine's trickier semantics, each checked against CPython's rules."""

from __future__ import annotations

import collections
import pickle

import pytest

from modelshield.pickle import EventKind, Machine, PickleAnalysis, analyse


def _sbu(s: str) -> bytes:
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _global4(module: str, name: str) -> bytes:
    return _sbu(module) + _sbu(name) + b"\x93"


def _calls(a: PickleAnalysis) -> list[str | None]:
    return [e.name for e in a.events() if e.kind is EventKind.CALL]


def _one_stream(data: bytes) -> PickleAnalysis:
    a = analyse(data)
    assert len(a.streams) == 1
    return a


SYSTEM_CALL = b"cos\nsystem\n(S'echo hi'\ntR."


def test_pop_with_empty_stack_pops_a_mark() -> None:
    # CPython: POP with nothing above the top mark discards the mark.
    a = _one_stream(b"N(0.")
    assert a.streams[0].complete
    # ... so a following APPENDS has no mark any more.
    a = _one_stream(b"](0e.")
    assert a.streams[0].error == "could not find MARK"
    assert a.streams[0].error_pos == 3


def test_pop_with_nothing_at_all_is_an_error() -> None:
    a = _one_stream(b"0N.")
    assert a.streams[0].error is not None
    assert a.streams[0].error_pos == 0


def test_dup_duplicates_the_top() -> None:
    a = _one_stream(b"cos\nsystem\n2(S'id'\ntR0(S'ls'\ntR.")
    assert _calls(a) == ["os.system", "os.system"]
    assert _one_stream(b"2.").streams[0].error == "unpickling stack underflow"


def test_memo_get_missing_is_an_error_with_position() -> None:
    a = _one_stream(b"\x80\x02N\x85h\x07.")
    s = a.streams[0]
    assert s.error == "Memo value not found at index 7"
    assert s.error_pos == 4
    a = _one_stream(b"Ng12\n.")
    assert a.streams[0].error == "Memo value not found at index 12"
    assert a.streams[0].error_pos == 1


def test_memo_get_after_put_resolves_the_global() -> None:
    a = _one_stream(b"cos\nsystem\np3\n0g3\n(S'x'\ntR.")
    assert _calls(a) == ["os.system"]
    a = _one_stream(b"\x80\x04" + _global4("os", "system") + b"\x940h\x00(S'x'\ntR.")
    assert _calls(a) == ["os.system"]


def test_proto_6_is_unsupported() -> None:
    s = _one_stream(b"\x80\x06N.").streams[0]
    assert s.error is not None and "unsupported pickle protocol" in s.error
    assert s.error_pos == 0


def test_stack_global_with_non_str_is_an_error() -> None:
    s = _one_stream(b"\x80\x04K\x01K\x02\x93.").streams[0]
    assert s.error == "STACK_GLOBAL requires str"
    assert s.error_pos == 6
    s = _one_stream(b"\x80\x04" + _sbu("os") + b"C\x06system\x93.").streams[0]
    assert s.error == "STACK_GLOBAL requires str"


def test_stack_global_with_computed_name_is_a_dynamic_import() -> None:
    data = b"\x80\x04" + _global4("builtins", "str") + _sbu("os") + b"\x85R" + _sbu("system")
    a = _one_stream(data + b"\x93.")
    kinds = [e.kind for e in a.events()]
    assert EventKind.DYNAMIC_IMPORT in kinds


def test_concatenated_pickles_are_separate_streams() -> None:
    first = pickle.dumps([1, 2], protocol=2)
    second = SYSTEM_CALL
    a = analyse(first + second)
    assert len(a.streams) == 2
    assert a.streams[0].start == 0 and a.streams[0].end == len(first)
    assert a.streams[1].start == len(first)
    assert _calls(a) == ["os.system"]
    assert all(e.pos >= len(first) for e in a.streams[1].events)
    assert a.trailing_start is None


def test_trailing_garbage_sets_trailing_start() -> None:
    first = pickle.dumps({"a": 1}, protocol=4)
    a = analyse(first + b"\xffgarbage")
    assert len(a.streams) == 1 and a.streams[0].complete
    assert a.trailing_start == len(first)


def test_trailing_calls_are_kept() -> None:
    first = pickle.dumps(None, protocol=2)
    a = analyse(first + SYSTEM_CALL[:-1] + b"\xff")
    assert a.trailing_start == len(first)
    assert [e.name for e in a.trailing_events] == ["os.system"]


@pytest.mark.parametrize(
    ("data", "pos"),
    [
        (b"N\xff", 1),
        (b"NNNX\x05\x00\x00\x00ab", 3),
        (b"\x80\x02N(t\x85}q\x00N\x8f", 11),
        (b"N(lp0\nI1\nag9\n.", 10),
        (b"NNNNcos\nsystem", 4),
        (b"(\x93", 1),
    ],
)
def test_errors_carry_the_byte_offset(data: bytes, pos: int) -> None:
    s = analyse(data).streams[0]
    assert s.error is not None
    assert s.error_pos == pos, s.error


def test_truncation_is_flagged() -> None:
    s = analyse(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00N").streams[0]
    assert s.truncated and s.error is not None
    s = analyse(b"NNN").streams[0]
    assert s.truncated and s.error_pos == 3


def test_offsets_are_relative_to_start() -> None:
    blob = b"JUNK" + SYSTEM_CALL
    a = Machine().analyse(blob, start=4)
    e = next(e for e in a.events() if e.kind is EventKind.CALL)
    assert e.pos == SYSTEM_CALL.index(b"R")
    assert e.index == 4  # GLOBAL MARK STRING TUPLE REDUCE


# ------------------------------------------------------------------------------- evidence


def test_evidence_renders_the_reconstructed_call() -> None:
    a = analyse(SYSTEM_CALL)
    (imp,) = [e for e in a.events() if e.kind is EventKind.IMPORT]
    (call,) = [e for e in a.events() if e.kind is EventKind.CALL]
    assert imp.name == "os.system" and imp.pos == 0 and imp.opcode == "GLOBAL"
    assert call.name == "os.system"
    assert call.evidence == "os.system('echo hi')"
    assert call.opcode == "REDUCE"
    assert call.pos == len(SYSTEM_CALL) - 2


def test_evidence_of_protocol_4_call_with_kwargs() -> None:
    data = pickle.dumps(pickle.PickleBuffer, protocol=4)
    assert [e.name for e in analyse(data).events()] == ["pickle.PickleBuffer"]
    data = (
        b"\x80\x04"
        + _global4("subprocess", "run")
        + b"]"
        + _sbu("ls")
        + b"a\x85}"
        + _sbu("shell")
        + b"\x88s\x92."
    )
    (call,) = [e for e in analyse(data).events() if e.kind is EventKind.CALL]
    assert call.name == "subprocess.run"
    assert call.evidence == "subprocess.run(['ls'], shell=True)"


def test_posix_alias_is_canonical() -> None:
    a = analyse(b"cposix\nsystem\n(S'id'\ntR.")
    assert _calls(a) == ["os.system"]


def test_python2_names_are_mapped_below_protocol_3() -> None:
    a = analyse(b"ccommands\ngetoutput\n(S'id'\ntR.")
    assert _calls(a) == ["subprocess.getoutput"]
    # From protocol 3 on, CPython no longer maps the names.
    a = analyse(b"\x80\x03ccommands\ngetoutput\n(S'id'\ntR.")
    assert _calls(a) == ["commands.getoutput"]


# ------------------------------------------------------------------------------- indirection


def _reduce(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"


def _s(text: str) -> bytes:
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def test_getattr_resolves_to_the_attribute() -> None:
    data = _reduce(_reduce(b"cbuiltins\ngetattr\n", b"cos\npath\n", _s("join")), _s("x"))
    a = analyse(data + b".")
    assert _calls(a) == ["builtins.getattr", "os.path.join"]
    data = _reduce(
        _reduce(
            b"cbuiltins\ngetattr\n", _reduce(b"cbuiltins\n__import__\n", _s("os")), _s("system")
        ),
        _s("id"),
    )
    a = analyse(data + b".")
    assert _calls(a) == ["builtins.__import__", "builtins.getattr", "os.system"]


def test_attrgetter_resolves_the_dotted_path() -> None:
    getter = _reduce(b"coperator\nattrgetter\n", _s("path.os.system"))
    target = _reduce(getter, b"cos\nsep\n")
    a = analyse(_reduce(target, _s("id")) + b".")
    assert _calls(a)[-1] == "os.sep.path.os.system"
    getter = _reduce(b"coperator\nattrgetter\n", _s("system"))
    a = analyse(_reduce(_reduce(getter, b"cos\nsep\n"), _s("id")) + b".")
    assert _calls(a)[-1] == "os.sep.system"


def test_methodcaller_calls_the_method() -> None:
    caller = _reduce(b"coperator\nmethodcaller\n", _s("system"), _s("id"))
    a = analyse(_reduce(caller, b"cos\n_mod\n") + b".")
    last = [e for e in a.events() if e.kind is EventKind.CALL][-1]
    assert last.name == "os._mod.system"
    assert last.via is not None and "methodcaller" in last.via
    assert "'id'" in last.evidence


def test_partial_calls_its_function() -> None:
    part = _reduce(b"cfunctools\npartial\n", b"cos\nsystem\n", _s("id"))
    a = analyse(_reduce(part) + b".")
    last = [e for e in a.events() if e.kind is EventKind.CALL][-1]
    assert last.name == "os.system"
    assert last.via is not None and "functools.partial" in last.via
    assert last.evidence == "os.system('id')"


def test_import_module_resolves_the_module() -> None:
    mod = _reduce(b"cimportlib\nimport_module\n", _s("os"))
    func = _reduce(b"cbuiltins\ngetattr\n", mod, _s("system"))
    a = analyse(_reduce(func, _s("id")) + b".")
    assert _calls(a) == ["importlib.import_module", "builtins.getattr", "os.system"]


def test_sys_modules_lookup_resolves_the_module() -> None:
    mod = _reduce(b"coperator\ngetitem\n", b"csys\nmodules\n", _s("posix"))
    func = _reduce(b"cbuiltins\ngetattr\n", mod, _s("system"))
    a = analyse(_reduce(func, _s("id")) + b".")
    assert _calls(a)[-1] == "os.system"
    mod = _reduce(b"cbuiltins\ngetattr\n", b"csys\nmodules\n", _s("get"))
    a = analyse(_reduce(b"cbuiltins\ngetattr\n", _reduce(mod, _s("os")), _s("x")) + b".")
    assert "builtins.getattr" in _calls(a)


def test_pkgutil_resolve_name_resolves_the_target() -> None:
    func = _reduce(b"cpkgutil\nresolve_name\n", _s("os:system"))
    a = analyse(_reduce(func, _s("id")) + b".")
    assert _calls(a) == ["pkgutil.resolve_name", "os.system"]


def test_nested_pickle_loads_result_propagates() -> None:
    inner = b"cos\nsystem\n."
    loads = _reduce(b"cpickle\nloads\n", b"C" + bytes([len(inner)]) + inner)
    a = analyse(b"\x80\x03" + _reduce(loads, _s("id")) + b".")
    events = a.events()
    nested = [e for e in events if e.kind is EventKind.NESTED]
    assert len(nested) == 1 and nested[0].nested is not None
    assert [e.name for e in nested[0].nested.events()] == ["os.system"]
    assert _calls(a) == ["pickle.loads", "os.system"]


def test_nested_pickle_events_are_analysed() -> None:
    inner = SYSTEM_CALL
    loads = _reduce(b"c_pickle\nloads\n", b"C" + bytes([len(inner)]) + inner)
    a = analyse(b"\x80\x03" + loads + b".")
    (nested,) = [e for e in a.events() if e.kind is EventKind.NESTED]
    assert nested.name == "pickle.loads" and nested.payload_kind == "pickle"
    assert nested.nested is not None
    assert _calls(nested.nested) == ["os.system"]


def test_instance_setstate_written_by_build_is_called() -> None:
    # BUILD {'__setstate__': os.system} then BUILD 'id': CPython calls os.system('id').
    data = b"\x80\x02cbuiltins\nobject\n)\x81}V__setstate__\ncos\nsystem\nsbVid\nb."
    calls = [e for e in analyse(data).events() if e.kind is EventKind.CALL]
    assert calls[-1].name == "os.system"
    assert calls[-1].evidence == "os.system('id')"


def test_persistent_ids_are_recorded() -> None:
    a = analyse(b"Pstorage\n.")
    assert [e.kind for e in a.events()] == [EventKind.PERSID]
    a = analyse(b"\x80\x02X\x01\x00\x00\x00xQ.")
    assert [e.kind for e in a.events()] == [EventKind.PERSID]


def test_mutation_of_a_global_is_recorded() -> None:
    a = analyse(b"cos\nenviron\n(S'LD_PRELOAD'\nS'/tmp/x.so'\nu.")
    assert any(e.kind is EventKind.MUTATION and e.name == "os.environ" for e in a.events())


def test_every_emulated_name_passes_the_fast_exit() -> None:
    """emulate() returns a plain Obj at once for names outside _EMULATED: each name it tests
    must be listed there, or its emulation would silently never run."""
    import inspect
    import re

    from modelshield.pickle import machine

    body = inspect.getsource(machine._Run.emulate)
    named = set(re.findall(r'"([A-Za-z_]+(?:\.[A-Za-z_]+)+)"', body))
    assert named and named <= machine._EMULATED


@pytest.mark.parametrize("before", [0, 100, 255, 256, 300])
@pytest.mark.parametrize("count", [0, 1, 156, 157, 400])
def test_dict_update_is_set_for_each_pair(before: int, count: int) -> None:
    from modelshield.pickle.values import Const, DictV, Value

    def pairs(n: int, tag: str) -> list[tuple[Value, Value]]:
        keys = [f"__{tag}{i}__" if i % 50 == 3 else f"{tag}{i}" for i in range(n)]
        return [(Const(k), Const(i)) for i, k in enumerate(keys)]

    def plain(d: DictV) -> list[tuple[object, object]]:
        return [
            (k.value, v.value) for k, v in d.items if isinstance(k, Const) and isinstance(v, Const)
        ]

    one, bulk = DictV(), DictV()
    for k, v in pairs(before, "a"):
        one.set(k, v)
        bulk.set(k, v)
    for k, v in pairs(count, "b"):
        one.set(k, v)
    bulk.update(pairs(count, "b"))
    assert plain(one) == plain(bulk) and len(plain(one)) == len(one.items)
    assert one.total == bulk.total == before + count


def test_memoryview_buffers_are_analysed_like_bytes() -> None:
    """Not a declared Buffer type, but callers pass views: the tight loop must not break."""
    data = pickle.dumps({"a": ["abc", 1, 2.5, None, True, b"xy"]}, protocol=4)
    view = analyse(memoryview(data))  # type: ignore[arg-type]
    assert view.streams[0].opcodes == analyse(data).streams[0].opcodes > 0


@pytest.mark.parametrize("cut", [1, 7, 5000, 12_345])
def test_opcode_count_at_a_truncation_is_exact(cut: int) -> None:
    import pickletools

    data = pickle.dumps([f"s{i}" for i in range(3000)] + list(range(3000)), protocol=2)[:-cut]
    complete = 0
    try:
        for _ in pickletools.genops(data):
            complete += 1
    except ValueError:
        pass
    stream = analyse(data).streams[0]
    assert stream.truncated and stream.opcodes == complete


def test_quiet_without_keep_still_records_calls() -> None:
    data = pickle.dumps(collections.OrderedDict(a=1), protocol=2)
    calls = [
        e
        for e in Machine(quiet=lambda name: True).analyse(data).streams[0].events
        if e.kind is EventKind.CALL
    ]
    assert [e.name for e in calls] == ["collections.OrderedDict"]
