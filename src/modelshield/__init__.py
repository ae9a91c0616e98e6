"""modelshield: find code execution in machine-learning model files without running them.

>>> import modelshield
>>> result = modelshield.scan("model.pkl")          # doctest: +SKIP
>>> result.is_clean()                               # doctest: +SKIP
"""

from modelshield.config import Config
from modelshield.errors import ConfigError, InputError, ModelShieldError, PolicyError
from modelshield.findings import (
    Confidence,
    Coverage,
    CoverageStatus,
    Finding,
    Location,
    ScanError,
    ScanResult,
    Severity,
)
from modelshield.scanner import scan, scan_bytes


def safe_load(path: str, **kwargs: object) -> object:
    """Scan ``path`` and load the same bytes under the allowlist (see :mod:`modelshield.load`)."""
    from modelshield.load import safe_load as _safe_load

    return _safe_load(path, **kwargs)  # type: ignore[arg-type]


__version__ = "0.1.0"

__all__ = [
    "Confidence",
    "Config",
    "ConfigError",
    "Coverage",
    "CoverageStatus",
    "Finding",
    "InputError",
    "Location",
    "ModelShieldError",
    "PolicyError",
    "ScanError",
    "ScanResult",
    "Severity",
    "__version__",
    "safe_load",
    "scan",
    "scan_bytes",
]
