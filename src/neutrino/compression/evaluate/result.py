"""`EvalResult`: everything one evaluation measured, serialisable to and from JSON."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neutrino.compression.evaluate.accuracy import AccuracyResult
from neutrino.compression.evaluate.footprint import Footprint
from neutrino.compression.evaluate.perplexity import PerplexityResult
from neutrino.compression.evaluate.speed import SpeedResult
from neutrino.errors import ConfigError


@dataclass
class EvalResult:
    """One model's evaluation: perplexities (by text: "lee", "wiki"), polarity accuracy, footprint and
    speed, with the protocol settings and timings needed to reproduce and compare it."""

    name: str
    model: str  # the resolved checkpoint path
    dtype: str
    device: str
    tasks: list[str]
    footprint: Footprint
    perplexity: dict[str, PerplexityResult] = field(default_factory=dict)
    polarity: AccuracyResult | None = None
    speed: SpeedResult | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)  # per task, plus "load" and "total"
    meta: dict[str, str] = field(default_factory=dict)  # date, versions, machine
    held_out: dict[str, str] = field(default_factory=dict)  # per perplexity text: see evaluate.held_out

    def ppl(self, text: str) -> float | None:
        """Perplexity on `text` ("lee" or "wiki"), or None if not measured."""
        result = self.perplexity.get(text)
        return None if result is None else result.ppl

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Rebuild a result written by `to_dict`; raises ConfigError naming a missing or bad field."""
        try:
            d = dict(data)
            d["footprint"] = Footprint(**d["footprint"])
            d["perplexity"] = {k: PerplexityResult(**v) for k, v in d.get("perplexity", {}).items()}
            d["polarity"] = AccuracyResult(**d["polarity"]) if d.get("polarity") else None
            d["speed"] = SpeedResult(**d["speed"]) if d.get("speed") else None
            return cls(**d)
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"not an evaluation result ({type(e).__name__}: {e})") from e


def save_json(result: EvalResult | list[EvalResult], path: str | os.PathLike[str]) -> Path:
    """Write one result (or a list) as JSON, atomically (temp file, then rename)."""
    data = [r.to_dict() for r in result] if isinstance(result, list) else result.to_dict()
    return atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")


def load_json(path: str | os.PathLike[str]) -> list[EvalResult]:
    """Results from a JSON file holding one result or a list of them."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read evaluation results ({e})") from e
    items = data if isinstance(data, list) else [data]
    try:
        return [EvalResult.from_dict(item) for item in items]
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same directory and `os.replace`."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same directory and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
