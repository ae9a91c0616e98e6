"""Hostile input: the machine never raises, never hangs, and stays within its limits."""

from __future__ import annotations

import pickle
import struct
import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pickle_recipes import mutate

from modelshield.pickle import EventKind, LimitKind, Limits, Machine, PickleAnalysis

_BOUND_S = 5.0


def _safe_analyse(data: bytes, limits: Limits | None = None) -> PickleAnalysis | None:
    """Analyse and check the result is well formed. Returns None only for the one known engine
    bug (invalid UTF-8 in BINUNICODE & co. escapes analyse(); strict xfail tests in
    test_differential.py track it)."""
    t0 = time.monotonic()
    try:
        a = Machine(limits).analyse(data)
    except UnicodeDecodeError:
        return None
    assert time.monotonic() - t0 < _BOUND_S
    assert a.size == len(data)
    pos = 0
    for s in a.streams:
        assert s.start == pos
        assert s.start <= s.end <= len(data)
        if s.error is not None:
            assert s.error_pos is not None and s.start <= s.error_pos <= len(data)
        for e in s.events:
            assert s.start <= e.pos < max(s.end, s.start + 1) or e.pos <= len(data)
        pos = s.end
    if a.trailing_start is not None:
        assert 0 <= a.trailing_start <= len(data)
    return a


def _samples() -> list[bytes]:
    objs: list[object] = [
        {"a": [1, 2.5, "x", b"y", None, True], "b": (1, 2), "c": {1, 2}},
        [list(range(20)), "é" * 3, bytearray(b"zz")],
        {"nested": [[[[1]]]], "big": 2**100},
    ]
    return [pickle.dumps(o, protocol=p) for o in objs for p in range(6)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data: bytes) -> None:
    _safe_analyse(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64).map(lambda b: b"\x80\x04" + b))
def test_random_protocol_4_bodies_never_crash(data: bytes) -> None:
    _safe_analyse(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_samples()),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("sid")),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_pickles_never_crash(data: bytes, edits: list[tuple[int, int, str]]) -> None:
    _safe_analyse(mutate(data, edits))


# ------------------------------------------------------------------------ adversarial inputs


def test_huge_claimed_lengths_are_truncation_errors() -> None:
    for op in (b"\x8e", b"\x8d", b"\x96", b"\x95"):
        a = _safe_analyse(b"\x80\x04" + op + struct.pack("<Q", 2**63) + b"abc.")
        assert a is not None
        s = a.streams[0]
        assert s.error is not None and s.truncated and s.error_pos == 2
    for op in (b"B", b"X", b"T"):
        a = _safe_analyse(b"\x80\x03" + op + struct.pack("<I", 2**31 - 1) + b"abc.")
        assert a is not None and a.streams[0].error is not None


def test_negative_lengths_are_errors() -> None:
    for data in (
        b"T\xff\xff\xff\xffabc.",  # BINSTRING with a signed length
        b"\x80\x02\x8b\xff\xff\xff\xff.",  # LONG4
        b"\x80\x02\x84\xff\xff\xff\xff.",  # EXT4 with a negative code
    ):
        a = _safe_analyse(data)
        assert a is not None
        assert a.streams[0].error is not None, data
        assert a.streams[0].error_pos in (0, 2)


def test_frame_larger_than_the_data() -> None:
    a = _safe_analyse(b"\x80\x04\x95\x00\x01\x00\x00\x00\x00\x00\x00N.")
    assert a is not None and a.streams[0].truncated


def test_long4_huge_is_stepped_over() -> None:
    n = 4 << 20
    data = b"\x80\x02\x8b" + struct.pack("<i", n) + b"\x01" * n + b"."
    a = _safe_analyse(data)
    assert a is not None and a.streams[0].complete
    a = _safe_analyse(b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01.")
    assert a is not None and a.streams[0].truncated


def test_deep_mark_nesting_hits_the_stack_limit() -> None:
    data = b"(" * 1_000_000 + b"N."
    a = _safe_analyse(data, Limits(max_stack=10_000))
    assert a is not None and a.streams[0].limit is LimitKind.STACK
    a = _safe_analyse(data)  # default limits: a bounded walk, no crash
    assert a is not None and a.streams[0].limit in (None, LimitKind.STACK)


def test_deep_list_nesting_is_flat() -> None:
    data = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
    a = _safe_analyse(data)
    assert a is not None and a.streams[0].complete


def test_memo_explosion_hits_the_memo_limit() -> None:
    data = b"\x80\x04N" + b"\x94" * 10_000 + b"."
    a = _safe_analyse(data, Limits(max_memo=1_000))
    assert a is not None and a.streams[0].limit is LimitKind.MEMO
    data = b"N" + b"".join(b"p%d\n" % i for i in range(5_000)) + b"."
    a = _safe_analyse(data, Limits(max_memo=100))
    assert a is not None and a.streams[0].limit is LimitKind.MEMO


def test_billion_laughs_via_memo_and_dup_is_cheap() -> None:
    # Each level is a tuple of two references to the previous one: 2**60 leaves when built.
    body = b"\x80\x04]\x94"
    for i in range(60):
        body += b"h" + bytes([i]) + b"2\x86\x94"
    call = b"\x8c\x08builtins\x8c\x05print\x93h" + bytes([60]) + b"\x85R."
    t0 = time.monotonic()
    a = _safe_analyse(body + call)
    assert time.monotonic() - t0 < 1.0
    assert a is not None and a.streams[0].complete
    (ev,) = [e for e in a.events() if e.kind is EventKind.CALL]
    assert len(ev.evidence) <= 1000


def test_many_events_hit_the_event_limit() -> None:
    data = b"(" + b"cos\nsystem\n" * 500 + b"t."
    a = _safe_analyse(data, Limits(max_events=50))
    assert a is not None and a.streams[0].limit is LimitKind.EVENTS


def test_many_opcodes_hit_the_opcode_limit() -> None:
    a = _safe_analyse(b"N0" * 10_000 + b"N.", Limits(max_opcodes=1_000))
    assert a is not None and a.streams[0].limit is LimitKind.OPCODES


def test_time_limit() -> None:
    a = _safe_analyse(b"N0" * 100 + b"N.", Limits(max_seconds=0.0))
    assert a is not None and a.streams[0].limit is LimitKind.TIME


def test_very_long_lines_are_bounded() -> None:
    for op in (b"I", b"L", b"F", b"S", b"V", b"P", b"g", b"p", b"c"):
        data = b"N" + op + b"1" * 3_000_000 + b"\n."
        t0 = time.monotonic()
        a = _safe_analyse(data)
        assert time.monotonic() - t0 < 2.0
        assert a is not None and a.streams[0].error is not None, op
        assert a.streams[0].error_pos == 1


def test_long_decimal_int_is_bounded() -> None:
    # 100k digits: CPython refuses to convert that many (int max str digits); no hang here.
    a = _safe_analyse(b"I" + b"7" * 100_000 + b"\n.")
    assert a is not None


def _loads_of(payload: bytes) -> bytes:
    return (
        b"\x80\x04\x8c\x06pickle\x8c\x05loads\x93\x8e"
        + struct.pack("<Q", len(payload))
        + payload
        + b"\x85R."
    )


def test_nested_pickle_recursion_hits_the_nesting_limit() -> None:
    payload = b"cos\nsystem\n(S'id'\ntR."
    for _ in range(10):
        payload = _loads_of(payload)
    a = _safe_analyse(payload, Limits(max_nesting=4))
    assert a is not None and a.limit is LimitKind.NESTING
    # Within the limit, the innermost call is found.
    inner = b"cos\nsystem\n(S'id'\ntR."
    for _ in range(3):
        inner = _loads_of(inner)
    a = _safe_analyse(inner, Limits(max_nesting=4))
    assert a is not None and a.limit is None
    depth, level = 0, a
    while True:
        nested = [e.nested for e in level.events() if e.nested is not None]
        if not nested:
            break
        level, depth = nested[0], depth + 1
    assert depth == 3
    assert [e.name for e in level.events() if e.kind is EventKind.CALL] == ["os.system"]


def test_decompression_bomb_hits_the_decoded_size_limit() -> None:
    bomb = zlib.compress(b"\x00" * (8 << 20), 9)
    data = (
        b"\x80\x04\x8c\x06pickle\x8c\x05loads\x93\x8c\x04zlib\x8c\ndecompress\x93B"
        + struct.pack("<I", len(bomb))
        + bomb
        + b"\x85R\x85R."
    )
    t0 = time.monotonic()
    a = _safe_analyse(data, Limits(max_decoded=1 << 16))
    assert time.monotonic() - t0 < 2.0
    assert a is not None and a.limit is LimitKind.DECODED_SIZE


def test_50mb_binbytes8_keeps_memory_flat() -> None:
    n = 50 << 20
    data = b"\x80\x04\x8e" + struct.pack("<Q", n) + bytes(n) + b"."
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        a = Machine().analyse(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert a.streams[0].complete
    assert peak - before < 20 << 20


@pytest.mark.parametrize("op", [b"\x8d", b"\x96"])
def test_50mb_strings_keep_memory_flat(op: bytes) -> None:
    n = 50 << 20
    data = b"\x80\x05" + op + struct.pack("<Q", n) + b"a" * n + b"."
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        Machine().analyse(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - before < 20 << 20
