"""Built-in example files for ``modelshield demo``, written from readable opcode recipes.

The malicious example is assembled opcode by opcode (it is never produced by pickling a live
object and never loaded): loading it with ``pickle.load`` would run ``os.system`` with a
harmless ``echo``. The benign example is a plain pickle of a small state dict.
"""

from __future__ import annotations

import pickle
from pathlib import Path

# PROTO 4, STACK_GLOBAL os.system, ("echo modelshield-demo-payload",), REDUCE, STOP
MALICIOUS = (
    b"\x80\x04"
    + b"\x8c\x02os"
    + b"\x8c\x06system"
    + b"\x93"
    + b"\x8c\x1decho modelshield-demo-payload"
    + b"\x85"
    + b"R"
    + b"."
)

BENIGN_OBJECT: dict[str, object] = {
    "epoch": 3,
    "learning_rate": 0.001,
    "layers": [{"name": "dense", "units": 16}, {"name": "out", "units": 2}],
    "weights": bytes(range(32)),
}


def write_examples(directory: Path) -> tuple[Path, Path]:
    """Write ``benign.pkl`` and ``malicious.pkl`` into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    benign = directory / "benign.pkl"
    benign.write_bytes(pickle.dumps(BENIGN_OBJECT, protocol=4))
    malicious = directory / "malicious.pkl"
    malicious.write_bytes(MALICIOUS)
    return benign, malicious
