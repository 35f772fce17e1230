"""Pareto front logic on hand-made points, the report files, and JSON round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neutrino.compression.evaluate.accuracy import AccuracyResult
from neutrino.compression.evaluate.footprint import Footprint
from neutrino.compression.evaluate.perplexity import PerplexityResult
from neutrino.compression.evaluate.report import (
    PLOT_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    fronts,
    pareto_front,
    write_report,
)
from neutrino.compression.evaluate.result import EvalResult, load_json, save_json
from neutrino.compression.evaluate.speed import SpeedResult
from neutrino.errors import ConfigError, InvalidParameterError


def make_result(name: str, mib: float, ppl: float, decode: float | None = 50.0) -> EvalResult:
    return EvalResult(
        name=name, model=f"/models/{name}", dtype="bfloat16", device="cpu", tasks=["ppl-lee", "polarity"],
        footprint=Footprint(int(mib * 2**20 * 2), int(mib * 2**20 * 2), int(mib * 2**20)),
        perplexity={"lee": PerplexityResult(ppl, 1.0, 100, 1, 1, 512, 256)},
        polarity=AccuracyResult(0.75, 200, 150, {"negative": 100, "positive": 100}, 0, "T: {text}"),
        speed=None if decode is None else SpeedResult(900.0, decode, 512, 128, 64, 3),
        protocol={"window": 512}, timings_s={"total": 12.0}, meta={"date": "today"},
    )


@pytest.mark.parametrize(("points", "front"), [
    ([(1, 5)], [0]),
    ([(1, 5), (2, 4), (3, 3), (4, 6)], [0, 1, 2]),  # (4, 6) is dominated by all
    ([(3, 3), (1, 5), (2, 2)], [1, 2]),  # (3, 3) dominated by (2, 2)
    ([(1, 1), (1, 1), (2, 2)], [0, 1]),  # equal points are both kept
    ([(1, 2), (1, 3)], [0]),  # same x, worse y: dominated
    ([(-80, 10), (-50, 9), (-60, 11)], [0, 1]),  # speed axis is negated: faster is smaller
])
def test_pareto_front(points, front) -> None:
    assert pareto_front(points) == front


def test_report_files(tmp_path: Path) -> None:
    results = [make_result("source", 300, 20.0, 60), make_result("int8", 160, 20.4, 80),
               make_result("int4", 90, 24.0, 70), make_result("bad", 200, 25.0, 40)]
    assert fronts(results) == {"size": {0, 1, 2}, "speed": {0, 1}}
    path = write_report(results, tmp_path / "out")
    text = path.read_text()
    assert path.name == REPORT_FILE
    for name in ("source", "int8", "int4", "bad"):
        assert f"`{name}`" in text
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert rows["int8"].endswith("| size, speed |") and rows["int4"].endswith("| size |")
    assert rows["bad"].endswith("|  |") and "1.0200x" in rows["int8"]
    assert (tmp_path / "out" / PLOT_FILE).read_bytes().startswith(b"\x89PNG")
    assert [r.name for r in load_json(tmp_path / "out" / RESULTS_FILE)] == ["source", "int8", "int4", "bad"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([REPORT_FILE, PLOT_FILE, RESULTS_FILE])


def test_report_without_speed_or_perplexity(tmp_path: Path) -> None:
    a, b = make_result("a", 100, 10.0, None), make_result("b", 50, 12.0, None)
    a.perplexity, b.perplexity = {}, {}
    b.polarity = AccuracyResult(0.7, 200, 140, {"negative": 90, "positive": 110}, 0, "T: {text}")
    assert fronts([a, b]) == {"size": {0, 1}}  # falls back to the polarity error rate
    assert write_report([a, b], tmp_path).is_file()


def test_report_rejects_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="results"):
        write_report([], tmp_path)


def test_json_round_trip(tmp_path: Path) -> None:
    result = make_result("x", 10, 5.0)
    save_json(result, tmp_path / "r.json")
    assert load_json(tmp_path / "r.json") == [result]
    assert EvalResult.from_dict(json.loads(result.to_json())) == result
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    with pytest.raises(ConfigError, match="bad.json"):
        load_json(tmp_path / "bad.json")
