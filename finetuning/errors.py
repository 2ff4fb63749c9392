"""The two exception types for problems a user can fix: bad params and bad input."""
from __future__ import annotations


class ConfigError(ValueError):
    """params.yaml is malformed: the message names the key and what is allowed."""


class StageError(RuntimeError):
    """A user-fixable problem: the message names the file, row, key or value at fault."""


USER_ERRORS = (StageError, ConfigError)
