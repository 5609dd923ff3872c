"""Every error xfer raises for something the user can fix. Each one's message is the whole story:
the entry points print it as one ``error:`` line, with no traceback, and exit with its ``exit_code``.

* exit 2, ``InputError``: what the user gave is wrong, found before anything trains (a config key or
  value, a freezing strategy that cannot apply to the trunk, a checkpoint that is unsafe or does not fit);
* exit 1, ``XferError``: a run that started and failed (missing or inconsistent data, a damaged cache
  entry, a NaN loss, a full disk, a sweep folder the summary cannot be honest about).
"""
from __future__ import annotations


class XferError(Exception):
    """Base class: a one-line message, no traceback."""

    exit_code = 1


class InputError(XferError):
    """Wrong input, found before anything trains."""

    exit_code = 2


class ConfigError(InputError, ValueError):
    """A config value or key that is not allowed."""


class CheckpointError(InputError, ValueError):
    """A checkpoint that cannot be used: unsafe, damaged, or not made for the configured model."""


class FreezingError(InputError, ValueError):
    """A freezing strategy that cannot apply to this trunk or these settings."""


class DataError(XferError, ValueError):
    """Data are missing, unreadable or inconsistent."""


class CacheError(XferError, RuntimeError):
    """A trunk cache entry exists but cannot be used."""


class NonFiniteLossError(XferError, RuntimeError):
    """Training produced a NaN or infinite loss."""


class DiskFullError(XferError, RuntimeError):
    """A write failed for want of space (ENOSPC): the message names the file and the space left."""


class ReportError(XferError, ValueError):
    """A sweep folder the summary cannot be honest about (duplicate runs, an unknown reference)."""
