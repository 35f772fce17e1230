"""Running one peer job in a process group of its own: start-up time, peak resident memory of the whole
group (a server and its engine processes together), the worker's JSON result lines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neutrino.errors import NeutrinoError

WORKERS = Path(__file__).parent / "workers"


class PeerRunError(NeutrinoError, RuntimeError):
    """A peer's job failed; the message carries the end of its log."""


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of all live processes in process group `pgid` (sum of VmRSS)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class PeakRss:
    """Samples a process group's resident memory every `interval` s in a thread; `peak` is the maximum."""

    def __init__(self, pgid: int, interval: float = 0.1) -> None:
        self.pgid, self.interval, self.peak = pgid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, group_rss_bytes(self.pgid))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _tail(path: Path, chars: int = 1500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def run_worker(python: str, script: str, job: dict[str, Any], env: dict[str, str], log_dir: Path,
               name: str, timeout: float) -> dict[str, Any]:
    """Run `script` (in workers/) under `python` with `job`; return its result with `startup_s` (launch
    to engine built) and `peak_rss_mib` (the group's peak while it ran)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=log_dir) as f:
        json.dump(job, f)
    log = log_dir / f"{name}.log"
    out = log_dir / f"{name}.out"
    command = [python, str(WORKERS / script), f.name]
    started = time.time()
    with open(out, "wb") as stdout, open(log, "wb") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env={**os.environ, **env},
                                start_new_session=True)
    rss = PeakRss(proc.pid)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise PeerRunError(f"{name}: no result after {timeout:.0f} s; log {log}") from None
    finally:
        peak = rss.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # engine processes a worker left behind
    events = {e["event"]: e for e in _events(out)}
    if proc.returncode != 0 or "result" not in events:
        raise PeerRunError(f"{name}: exit code {proc.returncode}; log {log}:\n{_tail(log)}")
    result = {k: v for k, v in events["result"].items() if k != "event"}
    result["startup_s"] = events["ready"]["t"] - started
    result["peak_rss_mib"] = peak / 2**20
    return result


def _events(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and "event" in event:
                yield event

