"""End-to-end tests of the `neutrino` console script (real subprocesses, real SmolLM2).

Each invocation that generates loads the model, so only three do (generate with an argument,
generate from stdin, chat); the rest fail or print help before any model is loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import FRANCE, Greedy

from neutrino.sampling_params import SamplingParams

NEUTRINO = shutil.which("neutrino", path=str(Path(sys.executable).parent)) or "neutrino"
TIMEOUT_S = 180
FAST_ENGINE = ("--dtype", "float32", "--kv-cache-memory", "256MiB")  # same numerics as the API fixture


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [NEUTRINO, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    for word in words:
        assert word in proc.stderr, proc.stderr


# ---- help ----------------------------------------------------------------------------------------


def test_top_level_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: neutrino" in proc.stdout
    for command in ("generate", "chat"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("generate", ["--max-tokens", "--temperature", "--dtype", "--stop", "--model", "--chat"]),
        ("chat", ["--max-tokens", "--temperature", "--system", "--model"]),
    ],
)
def test_subcommand_help(command: str, flags: list[str]) -> None:
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: neutrino {command}" in proc.stdout
    for flag in flags:
        assert flag in proc.stdout


def test_bench_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    if "bench" not in top.stdout:
        pytest.skip("`neutrino bench` is not registered yet")
    proc = run_cli("bench", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: neutrino bench" in proc.stdout


# ---- errors (no model is loaded) -----------------------------------------------------------------


def test_invalid_temperature_exits_2() -> None:
    assert_clean_error(run_cli("generate", "x", "--temperature", "-1"), "temperature")


def test_nonexistent_model_exits_2() -> None:
    assert_clean_error(run_cli("generate", "-m", "/nonexistent", "x"), "/nonexistent", "does not exist")


def test_empty_stdin_prompt_exits_2() -> None:
    assert_clean_error(run_cli("generate", stdin="  \n"), "prompt")


def test_unknown_flag_exits_2() -> None:
    proc = run_cli("generate", "x", "--no-such-flag")
    assert proc.returncode == 2
    assert "--no-such-flag" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- generation ----------------------------------------------------------------------------------


def test_generate_prompt_argument_matches_api(greedy: Greedy) -> None:
    proc = run_cli("generate", FRANCE, "--max-tokens", "8", *FAST_ENGINE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == greedy(FRANCE, 8).text + "\n"


def test_generate_prompt_from_stdin_matches_api(greedy: Greedy) -> None:
    proc = run_cli("generate", "--max-tokens", "4", *FAST_ENGINE, stdin=FRANCE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == greedy(FRANCE, 4).text + "\n"


def test_chat_two_turns_keeps_history(session_llm: Any) -> None:
    questions = ["What is 2+2? Answer with just the number.", "Now add 3 to that."]
    proc = run_cli("chat", "--max-tokens", "12", *FAST_ENGINE, stdin="\n".join(questions) + "\n")
    assert proc.returncode == 0, proc.stderr
    # the same conversation through the API: the second turn sees the first question and reply
    params = SamplingParams(temperature=0.0, max_tokens=12)
    history: list[dict[str, str]] = []
    replies = []
    for q in questions:
        history.append({"role": "user", "content": q})
        reply = session_llm.chat(history, params)[0].outputs[0].text
        history.append({"role": "assistant", "content": reply})
        replies.append(reply)
    assert proc.stdout == "".join(r + "\n" for r in replies)
    assert all(r.strip() for r in replies)
