"""Fixtures for the server tests: real `neutrino serve` subprocesses on free loopback ports.

The main server runs a tiny random-weight Llama with SmolLM2's tokenizer and chat template (fast, and
every token path is real); its KV cache is small on purpose (64 blocks of 16 tokens, under 32 running sequences) so that the load
tests run under memory pressure and exercise preemption. Only tests/server/test_smollm2.py starts the
real SmolLM2, where the text has to make sense.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

NEUTRINO = shutil.which("neutrino", path=str(Path(sys.executable).parent)) or "neutrino"
API_KEY = "test-key"
STARTUP_TIMEOUT_S = 120
MAIN_FLAGS = ("--num-blocks", "64", "--max-num-seqs", "32")  # max_model_len: the model's 1024
_LISTENING = re.compile(r'"msg": "listening on http://[^"]+", "port": (\d+)')
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


class ServerProcess:
    """A running `neutrino serve` and helpers to talk to it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, api_key: str | None) -> None:
        self.proc, self.port, self.log_path, self.api_key = proc, port, log_path, api_key
        self.base_url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json=body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name with labels, e.g. 'neutrino_kv_cache_free_blocks'."""
        text = self.get("/metrics").text
        out = {}
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if m and not line.startswith("#"):
                out[m.group(1)] = float(m.group(2))
        return out

    def wait_idle(self, timeout: float = 20.0) -> dict[str, float]:
        """Metrics once no request is in the engine and every KV block is free (or fail)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            idle = (m["neutrino_engine_unfinished_requests"] == 0 and m["neutrino_num_requests_running"] == 0
                    and m["neutrino_num_requests_waiting"] == 0
                    and m["neutrino_kv_cache_free_blocks"] == m["neutrino_kv_cache_total_blocks"])
            if idle or time.monotonic() > deadline:
                assert idle, f"engine not idle: { {k: v for k, v in m.items() if 'request' in k or 'kv' in k} }"
                return m
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        return self.proc.returncode


def launch(model: Path | None, log_path: Path, *flags: str, api_key: str | None = API_KEY,
           env: dict[str, str] | None = None) -> ServerProcess:
    """Start `neutrino serve` on a free port (--port 0) and wait until /health answers."""
    cmd = [NEUTRINO, "serve", *([str(model)] if model else []), "--port", "0", "--dtype", "float32", *flags]
    if api_key:
        cmd += ["--api-key", api_key]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            server = ServerProcess(proc, int(match.group(1)), log_path, api_key)
            if server.get("/health").status_code == 200:
                return server
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server did not start in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Any) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and chat template."""
    return tiny_checkpoint("llama", tokenizer=True)


@pytest.fixture(scope="session")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server (API key API_KEY, small KV cache, max_model_len 1024)."""
    srv = launch(tiny_model, tmp_path_factory.mktemp("server") / "server.log", *MAIN_FLAGS)
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()[-3000:]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A hung server fails its test instead of stalling the suite."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(180))
