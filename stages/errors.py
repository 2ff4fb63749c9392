"""The one exception type stages raise for problems a user can fix (bad input, bad params)."""
from __future__ import annotations

from stages.config import ConfigError


class StageError(RuntimeError):
    """A user-fixable problem: the message names the file, row, key or value at fault."""


USER_ERRORS = (StageError, ConfigError)
