"""Processes for the serving benchmark: launching a server in its own process group, waiting until it
answers, and measuring how many cores the server, the client and everything else on the machine use
(from /proc), so that runs disturbed by other jobs can be told apart and repeated."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from neutrino.errors import NeutrinoError


class ServingBenchmarkError(NeutrinoError, RuntimeError):
    """A server could not be launched or answered with something other than an SSE stream."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url: str, proc: subprocess.Popen | None, timeout: float) -> tuple[float, str | None]:
    """Poll GET /v1/models until it answers 200; return the seconds waited and the first model's id."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise ServingBenchmarkError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}/v1/models", timeout=5) as reply:
                if reply.status == 200:
                    models = json.loads(reply.read()).get("data") or [{}]
                    return time.perf_counter() - start, models[0].get("id")
        except OSError:
            pass
        time.sleep(0.5)
    raise ServingBenchmarkError(f"{base_url} not ready after {timeout:.0f} s")


@contextlib.contextmanager
def launched(command: list[str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Run `command` in its own process group, logging to `log_path`; kill the group on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)


# ---------------------------------------------------------------- CPU use by others (a shared machine)

_HZ = os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / _HZ  # minus idle and iowait


def group_cpu_seconds(pgid: int | None) -> float:
    """CPU seconds used so far by the live processes of process group `pgid` (a launched server)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat") if pgid else ():
        with contextlib.suppress(OSError, IndexError, ValueError):
            rest = stat.read_text().rsplit(")", 1)[1].split()
            if int(rest[2]) == pgid:
                total += int(rest[11]) + int(rest[12])  # utime + stime
    return total / _HZ


class CpuMeter:
    """Cores used during a run by the server, by this client and by everything else on the machine."""

    def __init__(self, pgid: int | None) -> None:
        self.pgid = pgid
        self.start = (time.perf_counter(), host_busy_seconds(), group_cpu_seconds(pgid), time.process_time())

    def read(self) -> dict:
        now = (time.perf_counter(), host_busy_seconds(), group_cpu_seconds(self.pgid), time.process_time())
        wall, host, server, client = (b - a for a, b in zip(self.start, now, strict=True))
        return {"server_cores": server / wall, "client_cores": client / wall,
                "other_cores": max(0.0, host - server - client) / wall}


def wait_for_quiet(pgid: int | None, max_other_cores: float, timeout: float) -> dict:
    """Wait (up to `timeout` s) until other processes use at most `max_other_cores` over a 3 s window."""
    start = time.perf_counter()
    while True:
        meter = CpuMeter(pgid)
        time.sleep(3.0)
        other = meter.read()["other_cores"]
        waited = time.perf_counter() - start
        if other <= max_other_cores or waited >= timeout:
            return {"waited_s": waited, "other_cores": other, "quiet": other <= max_other_cores}
