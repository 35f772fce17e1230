"""On/off switches read from environment variables, with a clear error for any other value."""

from __future__ import annotations

import os

from neutrino.errors import ConfigError

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """The switch `name` (unset or empty: `default`); ConfigError naming the variable for other values."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(_ON + _OFF)}")
