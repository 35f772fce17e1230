"""The peer benchmark's machinery (never its figures): a real Neutrino worker job on a tiny model, peak
memory of a process group, ratios and targets, and engines that cannot run reported with the reason."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neutrino.bench import peers
from neutrino.bench.peers import assets, engines, report
from neutrino.bench.peers.context import RunContext
from neutrino.bench.peers.process import PeakRss, PeerRunError, run_worker
from neutrino.errors import ConfigError


def _job(model: Path) -> dict:
    prompts = [[5 + i, 9, 12, 33 + i] for i in range(3)]
    return {"engine": {"model": str(model), "dtype": "float32", "threads": 1, "kv_cache_bytes": 1 << 24,
                       "max_num_seqs": 4, "max_num_batched_tokens": 64, "max_model_len": 64},
            "workloads": {"warmup": [1, 2, 3], "batch1": {"prompts": prompts, "output_len": 5},
                          "prefill": {"prompts": [[7] * 16, [8] * 16]},
                          "throughput": {"prompts": prompts, "output_len": 6}}}


def test_neutrino_worker_runs_every_workload(tiny_checkpoint, tmp_path: Path) -> None:
    model = tiny_checkpoint("llama", tokenizer=True)
    result = run_worker(sys.executable, "neutrino_worker.py", _job(model), {}, tmp_path, "n", timeout=300)
    assert result["throughput"]["generated_tokens"] == 18  # 3 requests x 6, EOS ignored
    assert result["throughput"]["output_tok_s"] > 0
    assert result["batch1"]["output_len"] == 5 and len(result["batch1"]["samples_tok_s"]) == 3
    assert result["prefill"]["prompt_len"] == 16
    assert 0 < result["startup_s"] < 300
    assert result["peak_rss_mib"] > 50  # a Python process with torch loaded


def test_a_failing_worker_names_its_log(tmp_path: Path) -> None:
    job = _job(tmp_path / "no-such-model")
    with pytest.raises(PeerRunError, match=r"exit code 1; log .*n\.log"):
        run_worker(sys.executable, "neutrino_worker.py", job, {}, tmp_path, "n", timeout=300)


def test_peak_rss_counts_the_whole_process_group() -> None:
    code = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    proc = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"],
                            start_new_session=True)
    rss = PeakRss(proc.pid, interval=0.05)
    proc.wait(30)
    time.sleep(0.1)
    assert rss.stop() > 200 * 2**20  # the grandchild's 200 MiB are in the group's peak


def test_ratios_and_targets() -> None:
    results = {
        "neutrino": {"fp32": {"batch1": {"batch1_decode_tok_s": 30.0}, "throughput": {"output_tok_s": 130.0},
                              "peak_rss_mib": 1100.0}},
        "openvino": {"fp32": {"batch1": {"batch1_decode_tok_s": 20.0}, "throughput": {"output_tok_s": 100.0},
                              "peak_rss_mib": 1000.0}},
        "vllm": {"fp32": {"error": "not run: no venv"}},
    }
    table = report.ratios(results)
    assert table == {"openvino": {"fp32": {"batch1_decode_tok_s": 1.5, "output_tok_s": 1.3,
                                           "peak_rss_mib": pytest.approx(1.1)}}}
    rows = {(r["metric"]): r["met"] for r in report.targets(table)}
    assert rows == {"output_tok_s": True, "batch1_decode_tok_s": True, "peak_rss_mib": True}
    table["openvino"]["fp32"]["peak_rss_mib"] = 1.2
    assert not [r for r in report.targets(table) if r["metric"] == "peak_rss_mib"][0]["met"]
    streamed = report.streaming(results, {"fp32": 500_000_000}, {"read_gb_s": 20.0})
    assert streamed["neutrino"]["fp32"] == {"streamed_gb_s": 15.0, "of_read_probe": 0.75}


def test_bandwidth_probe_measures_something() -> None:
    probe = report.bandwidth_probe(threads=1, nbytes=1 << 24, repeats=2)
    assert probe["read_gb_s"] > 0.1 and probe["copy_gb_s"] > 0.1


def test_missing_peers_are_reported_not_fatal(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(assets, "PEERS_DIR", tmp_path)
    ctx = RunContext(1, 1 << 24, 4, 64, 64, tmp_path, 60, "float32")
    for name in ("vllm", "openvino", "llama.cpp"):
        engine = engines.ENGINES.get(name)()
        out = peers._run_engine(engine, ["fp32"], {"warmup": [1]}, ctx)
        assert out["fp32"]["error"].startswith("not run:") and str(tmp_path) in out["fp32"]["error"]
    with pytest.raises(ConfigError, match="llama-quantize not found"):
        assets.gguf("int4")


def test_unknown_engine_is_a_clear_error() -> None:
    ns = peers.build_parser().parse_args(["--engines", "neutrino", "tensorrt"])
    with pytest.raises(ConfigError, match="unknown benchmark engine 'tensorrt'"):
        peers.run(argparse.Namespace(**{**vars(ns), "log_dir": None}))


def test_workers_import_nothing_from_neutrino() -> None:
    """Peers' venvs have no neutrino: a worker may only use the standard library and its engine."""
    for worker in (peers.Path(peers.__file__).parent / "workers").glob("*.py"):
        if worker.name == "neutrino_worker.py":
            continue
        text = worker.read_text()
        assert "import neutrino" not in text and "from neutrino" not in text, worker.name
    assert os.path.isfile(peers.Path(peers.__file__).parent / "workers" / "common.py")
