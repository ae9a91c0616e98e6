"""Regenerate the JSON mirror of the policy data: ``python -m modelshield.policy``.

Run it after editing ``data/*.toml``; a test fails while the mirror is out of date (the TOML
files stay authoritative: a stale mirror is simply not used).
"""

from modelshield.policy.model import _MIRROR, compile_mirror

if __name__ == "__main__":
    _MIRROR.write_text(compile_mirror(), encoding="utf-8")
    print(f"wrote {_MIRROR}")
