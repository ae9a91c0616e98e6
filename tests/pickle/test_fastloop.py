"""The optional C loop (``_fastloop.c``) gives exactly the pure-Python machine's results.

Every test here analyses the same bytes twice, with the C loop and without it, and compares the
whole analysis (streams, positions, opcode counts, events, errors, limits) and the symbolic
result. The C loop only speeds up plain-data opcodes; anything it cannot complete is left to the
Python loop, so the two must never differ, on valid, truncated, mutated or random input.

CI builds the extension and sets ``MODELSHIELD_REQUIRE_NATIVE=1``: there a missing build fails
instead of skipping.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pickle_recipes import mutate

from modelshield.pickle import Limits, machine
from modelshield.pickle.values import EAGER_BYTES, Const, render

NATIVE = machine._NATIVE_RUN

if NATIVE is None and os.environ.get("MODELSHIELD_REQUIRE_NATIVE", "") not in ("", "0"):
    raise RuntimeError("MODELSHIELD_REQUIRE_NATIVE is set but the C loop was not built")

pytestmark = pytest.mark.skipif(NATIVE is None, reason="the optional C loop is not built")


@contextmanager
def _pure() -> Iterator[None]:
    saved = machine._NATIVE_RUN
    machine._NATIVE_RUN = None
    try:
        yield
    finally:
        machine._NATIVE_RUN = saved


def _outcome(data: Any, limits: Limits | None) -> tuple[Any, str]:
    m = machine.Machine(limits)
    try:
        analysis, result = m.analyse_with_result(data)
    except Exception as exc:  # compared too: both must fail the same way
        return (type(exc).__name__, str(exc)), ""
    return analysis, render(result) if result is not None else ""


def _same(data: Any, limits: Limits | None = None) -> Any:
    native = _outcome(data, limits)
    with _pure():
        pure = _outcome(data, limits)
    assert native == pure
    return native[0]


# A spread of plain data: every opcode the C loop handles, in every protocol.
_OBJECTS: list[object] = [
    {f"w{i}": i for i in range(300)},
    ["a", "é", "\U0001f600", "\ud800", "", "x" * 255, "y" * 256, "z" * 70_000],
    [0, 1, 255, 256, 65535, 65536, -1, -(2**31), 2**31 - 1, 2**31, 2**70, 1.5, -0.0, 1e308],
    [None, True, False, (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], {}, b"", b"\xff" * 300],
    [("shared",) * 3, ["s"] * 5, {"k": ["v"]}],
    [bytearray(b"ba"), {1, 2}, frozenset({3}), (("nested", ("deep", ("er",))),)],
]
_SAMPLES = [pickle.dumps(o, protocol=p) for o in _OBJECTS for p in range(6)]
# Shared references (memo puts and gets) and a Python 2 str (SHORT_BINSTRING).
_SHARED = ["memo"]
_SAMPLES.append(pickle.dumps([_SHARED, _SHARED, {"a": _SHARED}], protocol=2))
_SAMPLES.append(b"\x80\x02U\x03abcq\x00h\x00\x86q\x01.")
# A vocabulary as scikit-learn's vectorizers pickle it (strings, LONG_BINPUT, LONG_BINGET).
_SAMPLES.append(pickle.dumps({f"tok{i}": i for i in range(5000)}, protocol=3))


@pytest.mark.parametrize("data", _SAMPLES, ids=range(len(_SAMPLES)))
def test_valid_pickles_same_result(data: bytes) -> None:
    analysis = _same(data)
    assert analysis.streams and analysis.streams[0].error is None


@pytest.mark.parametrize("kind", ["bytearray", "mmap"])
def test_other_buffers_same_result(kind: str, tmp_path: Any) -> None:
    data = _SAMPLES[-1]
    if kind == "bytearray":
        _same(bytearray(data))
        return
    path = tmp_path / "p.pkl"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        _same(mm)


@pytest.mark.parametrize("data", [_SAMPLES[3], _SAMPLES[12], _SAMPLES[-3], _SAMPLES[-2]])
def test_every_truncation_same_result(data: bytes) -> None:
    for cut in range(len(data)):
        _same(data[:cut])


@pytest.mark.parametrize("max_opcodes", [1, 2, 3, 5, 17, 4095, 4096, 4097, 5001])
def test_opcode_limits_same_result(max_opcodes: int) -> None:
    """The C loop never runs past the opcode budget nor past a periodic check."""
    limits = Limits(max_opcodes=max_opcodes)
    analysis = _same(_SAMPLES[-1], limits)
    assert analysis.streams[0].opcodes <= max_opcodes


def test_small_memo_and_stack_limits_same_result() -> None:
    for limits in (Limits(max_memo=10), Limits(max_stack=50)):
        analysis = _same(_SAMPLES[-1], limits)
        assert analysis.limit is not None


@pytest.mark.parametrize(
    "body",
    [
        b"X\x02\x00\x00\x00\xc3(",  # invalid UTF-8
        b"\x8c\x02\xff\xfe\x94",  # invalid UTF-8, short form
        b"X\xff\xff\xff\xff",  # length past the end
        b"h\x07",  # memo miss
        b"j\x07\x00\x00\x00",  # memo miss, long form
        b"q\x00",  # put on an empty stack
        b"\x94",  # MEMOIZE on an empty stack
        b"\x86",  # TUPLE2 on an empty stack
        b"K\x01\x86",  # TUPLE2 with one value
        b"J\x01\x00",  # truncated BININT
        b"G\x00\x00",  # truncated BINFLOAT
        b"C\x05ab",  # truncated SHORT_BINBYTES
        b"U\x05ab",  # truncated SHORT_BINSTRING
    ],
)
def test_where_the_c_loop_stops_the_errors_are_the_same(body: bytes) -> None:
    analysis = _same(b"\x80\x04" + body + b".")
    assert analysis.streams[0].error is not None


def test_long_strings_are_left_to_python() -> None:
    """Strings over EAGER_BYTES stay memoryviews of the input (a lazy Const): not copied."""
    text = "l" * (EAGER_BYTES + 1)
    _same(pickle.dumps([text, text], protocol=4))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_same_result(data: bytes) -> None:
    _same(data)


_ALPHABET = st.sampled_from(b"XhjqrKJMGN\x88\x89\x85\x86\x87}])UC(\x94\x8c.e\x80\x04\x00\x01\x05")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ALPHABET, max_size=200).map(bytes))
def test_random_plain_opcodes_same_result(body: bytes) -> None:
    """Opcode soup from the bytes the C loop dispatches on: mostly its own opcodes."""
    _same(b"\x80\x04" + body)
    _same(b"\x80\x04" + body + b".")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_SAMPLES),
    st.lists(
        st.tuples(st.integers(0, 100_000), st.integers(0, 255), st.sampled_from("sid")),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([None, Limits(max_opcodes=40), Limits(max_memo=3)]),
)
def test_mutated_pickles_same_result(
    data: bytes, edits: list[tuple[int, int, str]], limits: Limits | None
) -> None:
    _same(mutate(data, edits), limits)


# ------------------------------------------------------------------ the C function itself


def test_run_marks_and_stops_before_what_it_does_not_handle() -> None:
    assert NATIVE is not None
    stack: list[Any] = [Const("below")]
    memo: dict[int, Any] = {}
    metastack: list[list[Any]] = []
    data = b"K\x05\x8c\x02hi\x94(K\x01e"
    pos, index, top, marked = NATIVE(data, 0, len(data), 10, 100, stack, memo, metastack, 3)
    # BININT1, SHORT_BINUNICODE + MEMOIZE, MARK, BININT1: 5 opcodes; APPENDS is left to Python
    assert (pos, index, marked) == (10, 15, 6)
    assert metastack == [stack] and [v.value for v in stack] == ["below", 5, "hi"]
    assert top == [machine._SMALL_INTS[1]]  # (the shared constant, as the Python loop)
    assert memo[0] is stack[2] and isinstance(stack[2], Const) and stack[2].lazy is None


def test_run_respects_stop_at() -> None:
    assert NATIVE is not None
    stack: list[Any] = []
    data = b"K\x01" * 10
    assert NATIVE(data, 0, len(data), 0, 4, stack, {}, [], 0) == (8, 4, stack, 0)
    assert len(stack) == 4
    # a string and its memo put count as two opcodes: the put is left when only one fits
    data = b"\x8c\x01a\x94"
    memo: dict[int, Any] = {}
    assert NATIVE(data, 0, len(data), 0, 1, stack, memo, [], 0)[:2] == (3, 1)
    assert memo == {}


def test_run_never_reads_past_end() -> None:
    assert NATIVE is not None
    data = struct.pack("<BI", 0x58, 3) + b"abc"
    assert NATIVE(data, 0, len(data) - 1, 0, 10, [], {}, [], 0)[:2] == (0, 0)
    with pytest.raises(ValueError, match="outside the buffer"):
        NATIVE(data, 0, len(data) + 1, 0, 10, [], {}, [], 0)
    with pytest.raises(TypeError):
        NATIVE(data, 0, len(data), 0, 10, (), {}, [], 0)


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHIELD_PURE_PYTHON", "1")
    assert machine._native_run() is None
    monkeypatch.setenv("MODELSHIELD_PURE_PYTHON", "0")
    assert machine._native_run() is not None
