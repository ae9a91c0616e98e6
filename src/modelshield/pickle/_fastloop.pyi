"""The optional C accelerator of the pickle machine's plain-data loop (``_fastloop.c``)."""

from typing import Any

def init(
    const: type,
    seq: type,
    dictv: type,
    small_ints: list[Any],
    none: Any,
    true: Any,
    false: Any,
    eager: int,
    /,
) -> None: ...
def run(
    raw: Any,
    pos: int,
    end: int,
    index: int,
    stop_at: int,
    stack: list[Any],
    memo: dict[int, Any],
    metastack: list[list[Any]],
    marked: int,
    /,
) -> tuple[int, int, list[Any], int]: ...
