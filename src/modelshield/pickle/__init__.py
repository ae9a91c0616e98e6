"""The pickle engine: a symbolic machine over every opcode of protocols 0-5.

It never imports or calls anything named by the data; it yields a trace of imports, calls,
attribute writes and nested payloads (see :mod:`modelshield.pickle.trace`).
"""

from modelshield.pickle.machine import Limits, Machine, analyse
from modelshield.pickle.trace import Event, EventKind, LimitKind, PickleAnalysis, Stream

__all__ = [
    "Event",
    "EventKind",
    "LimitKind",
    "Limits",
    "Machine",
    "PickleAnalysis",
    "Stream",
    "analyse",
]
