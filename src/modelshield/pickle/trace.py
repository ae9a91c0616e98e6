"""What the symbolic pickle machine observed: imports, calls, mutations, nested payloads.

Events are plain frozen records; the machine decides nothing about safety. ``rules/`` turns a
trace plus the policy into findings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EventKind(enum.Enum):
    IMPORT = "import"
    """A global was looked up (GLOBAL, STACK_GLOBAL, INST). ``name`` is the dotted name."""
    CALL = "call"
    """Something was called. ``name`` is the resolved target, or None when it is dynamic."""
    MUTATION = "mutation"
    """Attributes or items of an object the pickle did not create were written."""
    NESTED = "nested"
    """Bytes were handed to a deserializer; ``nested`` holds their analysis when possible."""
    PERSID = "persid"
    EXT = "ext"
    DYNAMIC_IMPORT = "dynamic-import"
    """STACK_GLOBAL whose module or name is computed at load time."""


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    pos: int
    """Byte offset of the opcode, relative to the start of the analysed buffer."""
    index: int
    """Index of the opcode in its pickle stream."""
    opcode: str
    name: str | None = None
    evidence: str = ""
    via: str | None = None
    """How the call was reached when not a direct REDUCE: e.g. ``copyreg._reconstructor``,
    ``functools.partial``, ``operator.methodcaller``, ``BUILD/__setstate__``."""
    nested: PickleAnalysis | None = None
    payload_kind: str | None = None
    """For NESTED: ``pickle``, ``marshal`` (code objects, never decoded) or ``unknown``."""
    origin: str | None = None
    """For CALL: the global actually named in the pickle when ``name`` is what it evaluates to
    (dill's ``_eval_repr('range(0, 3)')`` is a call of ``builtins.range``)."""
    new_only: bool = False
    """For CALL: the class is instantiated with ``cls.__new__`` only (NEWOBJ,
    ``copyreg._reconstructor``); its ``__init__`` is not called."""


class LimitKind(enum.Enum):
    OPCODES = "opcodes"
    STACK = "stack"
    MEMO = "memo"
    EVENTS = "events"
    NESTING = "nesting"
    DECODED_SIZE = "decoded-size"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class Stream:
    """One pickle (from its first opcode to STOP or to where it breaks)."""

    start: int
    end: int
    """Offset just past the last opcode analysed."""
    protocol: int | None
    opcodes: int
    events: tuple[Event, ...]
    error: str | None = None
    """Why the stream breaks the format (what CPython would raise), if it does."""
    error_pos: int | None = None
    truncated: bool = False
    limit: LimitKind | None = None
    """Set when analysis stopped at a limit: content after ``end`` was not analysed."""
    dropped_events: int = 0
    """Events not kept because the caller's filter said they need no report."""

    @property
    def complete(self) -> bool:
        return self.error is None and self.limit is None


@dataclass(frozen=True, slots=True)
class PickleAnalysis:
    """Every pickle stream found in a buffer, plus what followed the last one."""

    streams: tuple[Stream, ...]
    size: int
    trailing_start: int | None = None
    """Offset of bytes after the last stream that are not a pickle, if any."""
    trailing_events: tuple[Event, ...] = field(default=())
    """Resolved calls seen in trailing bytes that do not form a complete pickle."""
    data_regions: tuple[tuple[int, int, str], ...] = field(default=())
    """Spans ``(start, end, what)`` that joblib.load reads itself (inline numpy arrays)."""
    alternate: PickleAnalysis | None = None
    """The same bytes as a plain ``pickle.load`` reads them, when that differs (joblib files:
    inline array bytes are then read as opcodes)."""

    @property
    def limit(self) -> LimitKind | None:
        for s in self.streams:
            if s.limit is not None:
                return s.limit
            for e in s.events:
                if e.nested is not None and e.nested.limit is not None:
                    return e.nested.limit
        return None

    def events(self) -> tuple[Event, ...]:
        return tuple(e for s in self.streams for e in s.events)
