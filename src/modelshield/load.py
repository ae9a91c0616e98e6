"""Load models safely: scan the bytes, then unpickle *those same bytes* under the allowlist.

``safe_load(path)`` reads the file once, scans that buffer, and refuses (raising
:class:`UnsafeModelError`, which carries the findings) when anything is at or above the threshold
or could not be fully analysed. It then unpickles the same buffer with an unpickler whose
``find_class`` resolves only names the policy allows; anything else raises
:class:`DisallowedGlobalError` before it is imported. Drop-ins:

* :func:`torch_load` — ``torch.load``-compatible (returns real tensors and modules);
* :func:`joblib_load` — for scikit-learn/joblib files (plain or compressed);
* :func:`safe_load` — picks by content (PyTorch zip/legacy, joblib, plain pickle).

Extend the policy with :class:`modelshield.Config` ``allow`` entries (each with a reason), the
same ones the scanner honours.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from modelshield.config import Config
from modelshield.errors import ModelShieldError, UnsafeInputError
from modelshield.findings import Finding, ScanResult, Severity
from modelshield.pickle.names import canonical, fix_import
from modelshield.policy import Policy, Verdict
from modelshield.scanner import scan_bytes


class UnsafeModelError(UnsafeInputError):
    """The scan of the bytes to load found problems; nothing was loaded."""

    def __init__(self, path: str, result: ScanResult, threshold: Severity) -> None:
        self.path = path
        self.result = result
        self.findings: tuple[Finding, ...] = result.at_or_above(threshold)
        if self.findings:
            what = f"{len(self.findings)} finding(s) at or above {threshold.label}"
        else:
            what = "content that could not be fully analysed"
        super().__init__(f"{path}: refused to load: {what}")

    def diagnostics(self) -> str:
        lines = [str(self)]
        for f in self.findings[:20]:
            lines.append(f"  {f.rule_id} {f.severity.label}: {f.message}")
            if f.evidence:
                lines.append(f"      {f.evidence}")
        for c in self.result.coverage:
            if not c.status.complete:
                lines.append(f"  not analysed: {c.path} {c.member or ''} ({c.reason})")
        return "\n".join(lines)


class DisallowedGlobalError(ModelShieldError, pickle.UnpicklingError):
    """The pickle asked for a global the policy does not allow; it was not imported."""

    def __init__(self, name: str, verdict: Verdict) -> None:
        self.name = name
        self.verdict = verdict
        super().__init__(
            f"{name} is {'dangerous' if verdict is Verdict.DANGEROUS else 'not on the allowlist'}"
            "; refusing to load it (allow it in the configuration with a reason if you trust it)"
        )


def _policy(config: Config | None) -> Policy:
    base = Policy.default()
    return base.with_allowed(config.allow) if config and config.allow else base


def _resolve(policy: Policy, module: str, name: str) -> Any:
    """Import ``module.name`` only when the policy allows it.

    Python 2 names are mapped as CPython does for old protocols (they name no Python 3 module
    otherwise), and the module is imported under its canonical name (``__builtin__`` is
    ``builtins``, ``_codecs`` is ``codecs``).
    """
    module, name = fix_import(module, name, 2)
    dotted = canonical(f"{module}.{name}")
    verdict = policy.classify(dotted).verdict
    if verdict is not Verdict.ALLOWED:
        raise DisallowedGlobalError(dotted, verdict)
    obj: Any = importlib.import_module(canonical(module))
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _restricted_unpickler_class(base: type[pickle.Unpickler], policy: Policy) -> type[Any]:
    class PolicyUnpickler(base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str) -> Any:
            return _resolve(policy, module, name)

    return PolicyUnpickler


def policy_pickle_module(config: Config | None = None) -> ModuleType:
    """A ``pickle``-like module whose Unpickler enforces the policy (for ``pickle_module=``)."""
    policy = _policy(config)
    mod = ModuleType("modelshield_policy_pickle")
    unpickler = _restricted_unpickler_class(pickle.Unpickler, policy)
    mod.Unpickler = unpickler  # type: ignore[attr-defined]
    mod.Pickler = pickle.Pickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    mod.loads = lambda b, **kw: unpickler(io.BytesIO(b), **kw).load()  # type: ignore[attr-defined]
    mod.__name__ = "pickle"  # torch checks pickle_module.__name__ for its own defaults
    return mod


def _checked_bytes(path: str | Path, threshold: Severity, config: Config | None) -> bytes:
    data = Path(path).read_bytes()
    result = scan_bytes(data, str(path), config=config)
    if result.at_or_above(threshold) or not result.complete:
        raise UnsafeModelError(str(path), result, threshold)
    return data


def torch_load(
    path: str | Path,
    *,
    threshold: Severity = Severity.HIGH,
    config: Config | None = None,
    **kwargs: Any,
) -> Any:
    """``torch.load`` of a checkpoint that passed the scan, under the allowlist.

    Extra keyword arguments (``map_location``, ``mmap``...) go to ``torch.load``.
    """
    import torch

    data = _checked_bytes(path, threshold, config)
    kwargs.pop("weights_only", None)
    return torch.load(
        io.BytesIO(data),
        weights_only=False,  # the policy unpickler below is the restriction
        pickle_module=policy_pickle_module(config),
        **kwargs,
    )


def joblib_load(
    path: str | Path, *, threshold: Severity = Severity.HIGH, config: Config | None = None
) -> Any:
    """``joblib.load`` (plain or compressed) of a file that passed the scan, under the allowlist."""
    from joblib import numpy_pickle

    data = _checked_bytes(path, threshold, config)
    policy = _policy(config)
    unpickler_cls = _restricted_unpickler_class(numpy_pickle.NumpyUnpickler, policy)
    fobj = io.BytesIO(data)
    with numpy_pickle._validate_fileobject_and_memmap(fobj, str(path), None) as (stream, _):
        return unpickler_cls(str(path), stream, ensure_native_byte_order=True).load()


def pickle_load(
    path: str | Path, *, threshold: Severity = Severity.HIGH, config: Config | None = None
) -> Any:
    """``pickle.load`` of a plain pickle that passed the scan, under the allowlist."""
    data = _checked_bytes(path, threshold, config)
    unpickler = _restricted_unpickler_class(pickle.Unpickler, _policy(config))
    return unpickler(io.BytesIO(data)).load()


def safe_load(
    path: str | Path, *, threshold: Severity = Severity.HIGH, config: Config | None = None
) -> Any:
    """Load a PyTorch checkpoint, joblib file or plain pickle safely (chosen by content)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    loader: Callable[..., Any]
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH_MAGIC):
        loader = torch_load
    else:
        try:
            import joblib  # noqa: F401 - joblib's unpickler also reads plain pickles
        except ImportError:
            loader = pickle_load
        else:
            loader = joblib_load
    return loader(path, threshold=threshold, config=config)


_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8"
"""Start of a legacy torch.save file: protocol 2, then the magic number as LONG1."""
