"""The opcode decoder against :mod:`pickletools` and CPython's protocol-0 parsing rules."""

from __future__ import annotations

import collections
import datetime
import decimal
import io
import pickle
import pickletools
from typing import Any

import pytest

from modelshield.pickle import EventKind, analyse
from modelshield.pickle.opcodes import OPCODES, Op, PickleFormatError, iter_ops

_STRINGISH_LATIN1 = {"STRING", "BINSTRING", "SHORT_BINSTRING"}


def _norm(op: Op, ref: Any) -> Any:
    """Bring the decoder's raw argument to pickletools' representation."""
    arg = op.arg
    name = op.name
    if name in ("GLOBAL", "INST"):
        assert isinstance(arg, tuple)
        return f"{arg[0]} {arg[1]}"
    if isinstance(arg, memoryview):
        raw = bytes(arg)
        if name in _STRINGISH_LATIN1:
            return raw.decode("latin-1")
        if isinstance(ref, str):
            return raw.decode("utf-8", "surrogatepass")
        return bytearray(raw) if isinstance(ref, bytearray) else raw
    if name in _STRINGISH_LATIN1 and isinstance(arg, bytes):
        return arg.decode("latin-1")
    if isinstance(arg, bytes):  # line arguments: INT, LONG, FLOAT, GET, PUT, PERSID
        text = arg.decode("ascii")
        if name == "INT":
            if text in ("00", "01"):
                return text == "01"
            return int(text, 0)
        if name == "LONG":
            return int(text.rstrip("L"))
        if name == "FLOAT":
            return float(text)
        if name in ("GET", "PUT"):
            return int(text)
        return text
    return arg


def _compare(data: bytes) -> set[str]:
    ours = list(iter_ops(data))
    ref = list(pickletools.genops(data))
    assert [o.name for o in ours] == [r[0].name for r in ref]
    assert [o.pos for o in ours] == [r[2] for r in ref]
    for o, (_info, arg, _pos) in zip(ours, ref, strict=True):
        got = _norm(o, arg)
        if isinstance(arg, float) and arg != arg:
            assert got != got
        else:
            assert got == arg, (o.name, got, arg)
    return {o.name for o in ours}


class _Obj:
    def __init__(self) -> None:
        self.a = [1, "x"]


class _Ex:
    def __new__(cls, *, k: int = 0) -> _Ex:
        return super().__new__(cls)

    def __getnewargs_ex__(self) -> tuple[tuple[object, ...], dict[str, object]]:
        return (), {"k": 1}


_shared: list[object] = [1]
_rec: list[object] = []
_rec.append(_rec)
_rec_tuple_holder: list[object] = []
_rec_tuple = (_rec_tuple_holder,)
_rec_tuple_holder.append(_rec_tuple)

OBJECTS: list[object] = [
    None,
    True,
    False,
    0,
    1,
    255,
    256,
    65535,
    65536,
    -1,
    2**31 - 1,
    -(2**31),
    2**31,
    2**64,
    -(2**100),
    2 ** (8 * 300),
    0.5,
    -1e300,
    float("inf"),
    float("nan"),
    "",
    "ascii",
    "é€😀\n\\ \x00",
    "x" * 300,
    b"",
    b"\x00\xff" * 200,
    bytearray(b"abc"),
    (),
    (1,),
    (1, 2),
    (1, 2, 3),
    (1, 2, 3, 4),
    [],
    [1, 2, 3],
    list(range(1500)),
    {},
    {"a": 1, 2: [3]},
    {i: i for i in range(1500)},
    set(),
    {1, 2},
    frozenset(),
    frozenset({1, "a"}),
    [_shared, _shared],
    _rec,
    _rec_tuple,
    _Obj(),
    _Ex(),
    collections.OrderedDict(a=1),
    decimal.Decimal("1.1"),
    datetime.datetime(2000, 1, 1),
    complex(1, 2),
    len,
    Ellipsis,
    range(3),
]


@pytest.mark.parametrize("proto", range(pickle.HIGHEST_PROTOCOL + 1))
def test_decoder_agrees_with_pickletools(proto: int) -> None:
    seen: set[str] = set()
    for obj in OBJECTS:
        data = pickle.dumps(obj, protocol=proto)
        seen |= _compare(data)
        seen |= _compare(pickletools.optimize(data))
        buf = io.BytesIO()
        pickle._Pickler(buf, protocol=proto).dump(obj)
        seen |= _compare(buf.getvalue())
    assert "STOP" in seen


def _handcrafted() -> list[bytes]:
    """Opcodes CPython's pickler never writes (or only in special modes)."""
    return [
        b"(N1N.",  # POP_MARK
        b"N2\x86.",  # DUP
        b"(I1\nI01\nI00\nI-7\nL12L\nL-3\nF1.25\nt.",
        b"(S'a\\nb'\nS\"q'\"\nT\x02\x00\x00\x00hiU\x02yot.",
        b"(Vcaf\\u00e9\nVx\np0\ng0\n0t.",
        b"Pid\n.",
        b"\x80\x02X\x01\x00\x00\x00xQ.",
        b"(cos\nsep\nNo.",
        b"(i__main__\nX\n.",
        b"\x80\x02\x82\x01\x83\x01\x00\x84\x01\x00\x00\x00\x87.",
        b"\x80\x05\x97\x98.",
        b"\x80\x04\x8d\x01\x00\x00\x00\x00\x00\x00\x00a\x8e\x01\x00\x00\x00\x00\x00\x00\x00b"
        b"\x96\x01\x00\x00\x00\x00\x00\x00\x00c\x87.",
        b"\x80\x03]q\x00(K\x01K\x02er\x01\x00\x00\x00j\x01\x00\x00\x00\x86.",
        b"\x80\x04\x8b\x03\x00\x00\x00\x01\x02\x03\x8a\x00\x86.",
        b"(lp0\nI1\naI2\na.",
        b"(dp0\nS'k'\np1\nI1\ns.",
    ]


def test_every_opcode_is_decoded_like_pickletools() -> None:
    seen: set[str] = set()
    for obj in OBJECTS:
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            seen |= _compare(pickle.dumps(obj, protocol=proto))
    for data in _handcrafted():
        seen |= _compare(data)
    # Out-of-band buffers (NEXT_BUFFER / READONLY_BUFFER) as CPython writes them.
    pb = pickle.PickleBuffer(b"abc")
    seen |= _compare(pickle.dumps(pb, protocol=5, buffer_callback=lambda b: False))
    assert seen == {spec.name for spec in OPCODES.values()}
    assert len(OPCODES) == len(pickletools.opcodes)
    assert {s.name for s in OPCODES.values()} == {o.name for o in pickletools.opcodes}
    for code, spec in OPCODES.items():
        (ref,) = [o for o in pickletools.opcodes if o.name == spec.name]
        assert ref.code.encode("latin-1") == bytes([code])
        assert ref.proto == spec.proto


# ------------------------------------------------------------------------ protocol-0 forms


def _printed(arg_ops: bytes) -> str:
    """Evidence of ``builtins.print(<arg>)`` with ``arg_ops`` pushing the argument."""
    a = analyse(b"cbuiltins\nprint\n(" + arg_ops + b"tR.")
    s = a.streams[0]
    assert s.complete, s.error
    (call,) = [e for e in a.events() if e.kind is EventKind.CALL]
    return call.evidence


@pytest.mark.parametrize(
    ("ops", "shown"),
    [
        (b"I00\n", "False"),
        (b"I01\n", "True"),
        (b"I1\n", "1"),
        pytest.param(b"I010\n", "8", id="INT-octal-like-strtol"),
        pytest.param(b"K\x05p010\n0g10\n", "5", id="PUT-base-10"),
        (b"I-12\n", "-12"),
        (b"I0x10\n", "16"),
        (b"I99999999999999999999\n", "99999999999999999999"),
        (b"L12L\n", "12"),
        (b"L-5\n", "-5"),
        (b"L123456789012345678901234567890L\n", "123456789012345678901234567890"),
        (b"F1.5\n", "1.5"),
        (b"F-inf\n", "-inf"),
        (b"S'a\\nb'\n", repr("a\nb")),
        (b'S"it\'s"\n', repr("it's")),
        (b"S'\\x41\\101'\n", repr("AA")),
        (b"Vcaf\\u00e9 \\U0001f600\n", repr("café 😀")),
        (b"Vback\\slash\n", repr("back\\slash")),
        (b"Np7\n0g7\n", "None"),
        (b"K\x05p10\n0g10\n", "5"),
    ],
)
def test_protocol_0_forms(ops: bytes, shown: str) -> None:
    assert repr(pickle.loads(ops + b".")) == shown  # what CPython makes of it (data only)
    assert _printed(ops) == f"builtins.print({shown})"


@pytest.mark.parametrize(
    "ops",
    [
        b"Sabc\n",  # unquoted
        b"S'abc\n",  # unbalanced
        b"S'abc\"\n",  # mismatched quotes
        b"S'\n",  # a lone quote
        b"Ixyz\n",
        b"L\n",
        b"Fnope\n",
        b"gx\n",
    ],
)
def test_malformed_protocol_0_forms_are_errors(ops: bytes) -> None:
    a = analyse(b"N" + ops + b".")
    s = a.streams[0]
    assert s.error is not None
    assert s.error_pos == 1
    assert not s.complete


def test_unquoted_string_raises_in_the_decoder() -> None:
    with pytest.raises(PickleFormatError) as info:
        list(iter_ops(b"Sabc\n."))
    assert info.value.pos == 0
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(b"Sabc\n.")


def test_line_arguments_need_a_newline() -> None:
    with pytest.raises(PickleFormatError) as info:
        list(iter_ops(b"NI12"))
    assert info.value.truncated and info.value.pos == 1


def test_large_arguments_are_memoryviews() -> None:
    big = b"\x00" * (1 << 17)
    data = b"\x80\x04\x8e" + len(big).to_bytes(8, "little") + big + b"."
    op = next(o for o in iter_ops(data) if o.name == "BINBYTES8")
    assert isinstance(op.arg, memoryview) and len(op.arg) == len(big)
