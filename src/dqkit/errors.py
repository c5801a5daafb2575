"""dqkit's exceptions: one tree, so callers can catch what they mean."""

from __future__ import annotations


class DqkitError(Exception):
    """Base of every error dqkit raises on purpose."""


class InputError(DqkitError, ValueError):
    """A sample, reference file or argument cannot be used as given."""


class ConfigError(DqkitError, ValueError):
    """A setting (argument, environment variable) is invalid."""


class WarehouseError(DqkitError):
    """The warehouse file cannot be opened or written."""


class WarehouseBusyError(WarehouseError):
    """Another process holds the warehouse file for writing."""
