"""Whether each evaluation text was held out from a compressed checkpoint's calibration.

`neutrino compress` records its calibration data in the checkpoint's recipe.yaml (`produced:
calibration_data`: the source, and the token ranges of lee_background left out because the perplexity
protocol scores them). From that, each perplexity text gets one label:

- `held-out corpus`: calibration never read this text (the Wikipedia excerpt under the default
  lee_background calibration);
- `held-out segments`: the same corpus as calibration, but the scored segments were left out of it
  (lee_background under the default calibration);
- `NOT held out`: calibration read the scored tokens (lee_background when more calibration windows
  were asked for than the spans between the segments hold);
- `not checked`: calibration came from the user's own file, which may contain either text;
- `no calibration`: the method used no data (RTN, magnitude pruning) or the model is not compressed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neutrino.compression.calibration import DEFAULT_CALIB_SOURCE

HELD_OUT_CORPUS, HELD_OUT_SEGMENTS, NOT_HELD_OUT = "held-out corpus", "held-out segments", "NOT held out"
NOT_CHECKED, NO_CALIBRATION = "not checked", "no calibration"


def calibration_of(checkpoint: str | Path) -> dict[str, Any] | None:
    """The `calibration_data` recorded in `checkpoint`/recipe.yaml, or None (no recipe or no calibration)."""
    import yaml

    path = Path(checkpoint) / "recipe.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    produced = data.get("produced") if isinstance(data, dict) else None
    calib = produced.get("calibration_data") if isinstance(produced, dict) else None
    return calib if isinstance(calib, dict) else None


def held_out_labels(calibration: dict[str, Any] | None, texts: list[str]) -> dict[str, str]:
    """Label of each perplexity text ("lee", "wiki") for a checkpoint calibrated on `calibration`."""
    if calibration is None:
        return {t: NO_CALIBRATION for t in texts}
    if calibration.get("source") != DEFAULT_CALIB_SOURCE:
        return {t: NOT_CHECKED for t in texts}
    lee = HELD_OUT_SEGMENTS if calibration.get("excluded_eval_ranges") else NOT_HELD_OUT
    return {t: lee if t == "lee" else HELD_OUT_CORPUS for t in texts}
