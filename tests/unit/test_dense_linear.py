"""The small-batch dense linear kernel (csrc/dense.cpp) against F.linear in float64, and its per-machine
tuning: measured once per weight shape, cached, overridable, used only up to the measured row count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from neutrino.errors import ConfigError
from neutrino.kernels import loader
from neutrino.layers.linear import Linear
from neutrino.layers.quant import dense_tuning


@pytest.fixture(autouse=True)
def _kernels():
    loader.reset()
    if dense_tuning.dense_op() is None:
        pytest.skip(f"C++ kernels unavailable: {loader.last_error}")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("m, n, k", [(1, 960, 576), (3, 7, 19), (2, 5, 1536), (9, 33, 64), (0, 4, 8), (5, 12, 40),
                                     (7, 9, 24), (130, 20, 576)])  # 130 x 576: two panels of x
def test_matches_linear(dtype, tol, m: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    ref = F.linear(x.double(), w.double(), b.double())
    for bias in (b, None):
        got = torch.ops.neutrino_cpu.dense_linear(x, w, bias)
        assert got.dtype == dtype and got.shape == (m, n)
        expected = ref if bias is not None else F.linear(x.double(), w.double())
        if m:
            assert (got.double() - expected).abs().max().item() <= tol * expected.abs().max().item()


def test_a_row_does_not_depend_on_the_batch() -> None:
    """Each row of y is the same sums in the same order whatever M is (register blocks of 2-4 rows,
    panels): a request's output does not change with the batch it runs in (the decoder plan relies on it)."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(131, 576, generator=g)
    w = torch.randn(40, 576, generator=g)
    full = torch.ops.neutrino_cpu.dense_linear(x, w, None)
    for m in (1, 2, 3, 4, 5, 64):
        assert torch.equal(torch.ops.neutrino_cpu.dense_linear(x[-m:], w, None), full[-m:])


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(RuntimeError, match=r"x \[M, K\] and weight \[N, K\]"):
        torch.ops.neutrino_cpu.dense_linear(torch.zeros(1, 8), torch.zeros(4, 9), None)
    with pytest.raises(RuntimeError, match="weight must be contiguous"):
        torch.ops.neutrino_cpu.dense_linear(torch.zeros(1, 8), torch.zeros(8, 4).t(), None)


def _model(n_layers: int = 3) -> torch.nn.Module:
    layers = [Linear(64, [48], bias=False, dtype=torch.float32, prefix=f"l{i}") for i in range(n_layers)]
    for layer in layers:
        layer.weight.data.normal_()
    return torch.nn.Sequential(*layers)


def test_tuning_is_measured_once_then_read(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEUTRINO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dense_tuning, "MEASURE_BYTES", 1 << 16)
    model = _model()
    decided = dense_tuning.tune(model)
    cache = json.loads((tmp_path / "tuning" / "dense_linear.json").read_text())
    (entry,) = cache.values()
    assert decided == {"float32 48x64": entry["max_rows"]}
    assert all(layer.dense_max_rows == entry["max_rows"] for layer in model)
    assert set(entry["seconds_per_pass"]) <= {str(r) for r in dense_tuning.CANDIDATE_ROWS}
    calls = []
    monkeypatch.setattr(dense_tuning, "measure", lambda *a: calls.append(a))
    assert dense_tuning.tune(_model()) == decided and not calls  # read from the cache


def test_the_limit_decides_which_path_runs(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEUTRINO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(dense_tuning.ENV, "4")
    model = _model(1)
    assert dense_tuning.tune(model) == {"float32 48x64": 4}
    assert not (tmp_path / "tuning").exists()  # a fixed setting measures and caches nothing
    layer = model[0]
    seen = []
    real = torch.ops.neutrino_cpu.dense_linear
    monkeypatch.setattr(torch.ops.neutrino_cpu, "dense_linear", lambda *a: seen.append(a[0].shape[0]) or real(*a))
    for rows in (1, 4, 5):
        x = torch.randn(rows, 64)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight), rtol=1e-5, atol=1e-5)
    assert seen == [1, 4]  # 5 rows went to F.linear


def test_off_and_bad_settings(monkeypatch) -> None:
    monkeypatch.setenv(dense_tuning.ENV, "off")
    model = _model(1)
    assert dense_tuning.tune(model) == {} and getattr(model[0], "dense_max_rows", 0) == 0
    monkeypatch.setenv(dense_tuning.ENV, "many")
    with pytest.raises(ConfigError, match=r"NEUTRINO_DENSE_LINEAR='many': expected auto, off or a row count"):
        dense_tuning.tune(model)
