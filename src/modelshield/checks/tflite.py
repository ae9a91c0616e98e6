"""Checks for tflite content (not implemented yet: never matches)."""

from __future__ import annotations

from modelshield.checks.context import Context, Probe
from modelshield.rules.rule import Rule

RULES: tuple[Rule, ...] = ()


def matches(probe: Probe) -> bool:
    return False


def check(ctx: Context) -> None:
    raise NotImplementedError
