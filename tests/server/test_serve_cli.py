"""`neutrino serve` command-line handling that needs no model: help, bad flags and bad environment
variables exit 2 with a message naming the value."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import NEUTRINO


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NEUTRINO, "serve", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_help_lists_server_options() -> None:
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--host", "--port", "--served-model-name", "--api-key", "--max-queued-requests",
                 "--shutdown-grace", "--kv-cache-memory", "--max-num-seqs", "--max-model-len", "NEUTRINO_PORT",
                 "OMP_WAIT_POLICY"):
        assert flag in proc.stdout


@pytest.mark.parametrize(("args", "env", "word"), [  # each run imports torch: keep the list short
    ((), {"NEUTRINO_KV_CACHE_MEMORY": "lots"}, "NEUTRINO_KV_CACHE_MEMORY"),
    (("--port", "70000"), {}, "--port"),
])
def test_bad_options_exit_2(args: tuple[str, ...], env: dict[str, str], word: str) -> None:
    proc = run(*args, env=env)
    assert proc.returncode == 2, proc.stderr
    assert word in proc.stderr and "Traceback" not in proc.stderr


def test_thread_env_passive_with_short_spin_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from neutrino.cli.serve import set_thread_env

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    set_thread_env(["generate"])
    assert "OMP_WAIT_POLICY" not in os.environ
    set_thread_env(["serve", "m"])
    assert (os.environ["OMP_WAIT_POLICY"], os.environ["GOMP_SPINCOUNT"]) == ("PASSIVE", "20000")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    set_thread_env(["serve"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ


def test_engine_process_environment_variable() -> None:
    from neutrino.cli.serve import env_defaults
    from neutrino.errors import InvalidParameterError

    assert env_defaults({"NEUTRINO_ENGINE_PROCESS": "0"})["engine_process"] is False
    assert env_defaults({"NEUTRINO_ENGINE_PROCESS": "yes"})["engine_process"] is True
    with pytest.raises(InvalidParameterError, match="NEUTRINO_ENGINE_PROCESS.*'maybe'.*expected 1, 0"):
        env_defaults({"NEUTRINO_ENGINE_PROCESS": "maybe"})
