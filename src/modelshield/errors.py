"""Exceptions raised by modelshield's public API. All derive from :class:`ModelShieldError`."""

from __future__ import annotations


class ModelShieldError(Exception):
    """Base class for every error modelshield raises on purpose."""

    def diagnostics(self) -> str:
        """A human-readable explanation with hints for fixing the problem."""
        return str(self)


class ConfigError(ModelShieldError):
    """The configuration (``[tool.modelshield]`` or ``.modelshield.toml``) is invalid."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

    def diagnostics(self) -> str:
        return (
            f"invalid modelshield configuration in {self.source}:\n  {self.problem}\n"
            "See the 'Configuration' section of the README for the accepted keys."
        )


class PolicyError(ModelShieldError):
    """A policy data file or a user policy entry is malformed."""


class InputError(ModelShieldError):
    """An input path does not exist or cannot be read."""


class UnsafeInputError(ModelShieldError):
    """The scanner flagged an input that an operation (convert, load) was asked to use."""
