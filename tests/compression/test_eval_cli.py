"""`neutrino eval` in-process through the real entry point: errors exit 2 with a message naming the
bad value before any model is loaded; a small full run on the tiny model writes JSON and a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neutrino.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "words"), [
    (["--tasks", "ppl-lee,bogus"], ["'tasks'", "bogus", "ppl-wiki"]),
    (["--tasks", ","], ["'tasks'"]),
    (["/no/such/model"], ["/no/such/model", "does not exist"]),
    (["--window", "64", "--stride", "64"], ["'stride'", "64"]),
    (["--max-examples", "0"], ["--max-examples"]),
    (["--results", "/no/such/results.json"], ["/no/such/results.json"]),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, args: list[str], words: list[str]) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def test_bad_token_cap_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--max-tokens", "-5"])
    assert exc.value.code == 2
    assert "-5" in capsys.readouterr().err


def test_eval_tiny_model_end_to_end(capsys, tmp_path: Path, tiny_checkpoint) -> None:
    model = tiny_checkpoint("llama", tokenizer=True)
    out_json, report = tmp_path / "r.json", tmp_path / "report"
    code, out, err = run(capsys, str(model), "--dtype", "float32", "--max-tokens", "200", "--window", "64",
                         "--stride", "32", "--max-examples", "4", "--name", "tiny", "--json", str(out_json),
                         "--report", str(report), "--no-progress")
    assert code == 0, err
    assert out.startswith("tiny [float32] | ppl-lee ") and "polarity" in out and "decode" in out
    data = json.loads(out_json.read_text())
    assert data["tasks"] == ["ppl-lee", "ppl-wiki", "polarity", "speed"]
    assert data["perplexity"]["lee"]["num_scored"] == 199 and data["perplexity"]["wiki"]["num_windows"] == 6
    assert data["polarity"]["num_examples"] == 4 and data["speed"]["decode_tok_s"] > 0
    assert (report / "report.md").is_file() and (report / "eval_plot.png").is_file()
    code, _, err = run(capsys, str(model), "--dtype", "float32", "--tasks", "ppl-lee", "--max-tokens", "64",
                       "--window", "64", "--stride", "32", "--results", str(out_json), "--report", str(report),
                       "--no-progress")
    assert code == 0, err
    assert (report / "report.md").read_text().count("| `") == 2  # the earlier result plus the new one
