"""Where Neutrino keeps what it makes on a machine: converted models, measured kernel choices."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Neutrino's cache root: `$NEUTRINO_CACHE_DIR`, else `$XDG_CACHE_HOME/neutrino`, else `~/.cache/neutrino`."""
    if env := os.environ.get("NEUTRINO_CACHE_DIR"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "neutrino"
    return Path.home() / ".cache" / "neutrino"
