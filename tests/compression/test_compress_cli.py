"""`neutrino compress`: a run from flags and from a recipe file, and bad input exiting with status 2 and
a message naming the bad value."""

from __future__ import annotations

import json

import pytest

from neutrino.cli.main import main


@pytest.fixture(scope="module")
def source(tiny_checkpoint):
    return tiny_checkpoint("llama", tokenizer=True)


def test_compress_from_flags_and_recipe_file(source, tmp_path, capsys) -> None:
    out = tmp_path / "w4"
    argv = ["compress", str(source), "--out", str(out), "--method", "gptq", "--bits", "4", "--group-size", "32",
            "--asym", "--calib-samples", "4", "--calib-len", "32", "--no-eval", "--no-progress"]
    assert main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["method"], qc["bits"], qc["group_size"], qc["symmetric"]) == ("gptq", 4, 32, False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prune: {method: wanda, pattern: '2:4'}\ncalibration: {samples: 4, seq_len: 32}\n")
    out2 = tmp_path / "sparse"
    assert main(["compress", str(source), "--out", str(out2), "--recipe", str(recipe), "--no-eval", "--no-progress"]) == 0
    assert json.loads((out2 / "config.json").read_text())["neutrino_sparsity"]["method"] == "wanda"


@pytest.mark.parametrize(("flags", "message"), [
    (["--bits", "5"], "'quantize.bits': expected one of (3, 4, 8), got 5"),
    (["--prune", "magnitude", "--sparsity", "1.2"], "'prune.sparsity': expected a number in [0.0, 1.0), got 1.2"),
    (["--sparsity", "0.5"], "needs a pruning method"),
    (["--prune", "wanda", "--pattern", "2:x"], "expected 'N:M'"),
    (["--method", "rtn", "--group-size", "48"], "group_size 48 does not divide in_features 64"),
    (["--method", "gptq", "--group-size", "32", "--calib-file", "MISSING"], "does not exist"),
    (["--recipe", "BADKEY"], "unknown key 'bitz'; valid keys: method, bits"),
])
def test_bad_input_exits_2_naming_the_value(source, tmp_path, capsys, flags, message) -> None:
    flags = [str(tmp_path / "missing.txt") if f == "MISSING" else f for f in flags]
    if "BADKEY" in flags:
        (tmp_path / "bad.yaml").write_text("quantize: {method: rtn, bitz: 4}\n")
        flags[flags.index("BADKEY")] = str(tmp_path / "bad.yaml")
    assert main(["compress", str(source), "--out", str(tmp_path / "o"), "--no-eval", "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neutrino: error:") and message in err
    assert not (tmp_path / "o").exists()


def test_existing_out_and_missing_model(source, tmp_path, capsys) -> None:
    (tmp_path / "o").mkdir()
    assert main(["compress", str(source), "--out", str(tmp_path / "o"), "--bits", "8", "--no-eval"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["compress", str(tmp_path / "nope"), "--out", str(tmp_path / "p"), "--bits", "8"]) == 2
    assert "does not exist locally" in capsys.readouterr().err
