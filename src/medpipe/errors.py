"""Errors a user can fix: printed as one clear line each, without a traceback."""

from __future__ import annotations


class MedpipeError(Exception):
    """Base class: the message is meant for the user and names the key or file at fault."""

    def lines(self) -> list[str]:
        return [str(self)]


class ConfigError(MedpipeError):
    """The composed configuration is invalid; holds one line per problem."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class DataError(MedpipeError):
    """A data file is missing, corrupt or inconsistent."""


class TrackingError(MedpipeError):
    """The MLflow tracking store or server cannot be used (unreachable, unopenable)."""
