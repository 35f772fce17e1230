"""The CPU kernels compiled at install: which variant loads, and every op on every variant this CPU runs.

The op tests themselves live beside their Python wrappers (KERNEL_TESTS); here they are rerun in a
subprocess per variant with NEUTRINO_KERNEL_ISA, since one process can hold only one variant's ops.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neutrino.kernels import loader
from neutrino.kernels.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[2]
KERNEL_TESTS = [
    "tests/unit/test_paged_attention_kernel.py",
    "tests/unit/test_prefill_attention_kernel.py",
    "tests/unit/test_fused_kernels.py",
    "tests/unit/test_dense_linear.py",
    "tests/quant/test_quant_layers.py",
    "tests/quant/test_quant_vnni.py",
    "tests/unit/test_kernel_variants.py",  # test_env_variant_is_the_one_loaded checks the override took
]
V3 = {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"}
V4 = V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(loader.ISA_ENV, raising=False)
    monkeypatch.delenv(loader.DISABLE_ENV, raising=False)
    yield monkeypatch
    monkeypatch.undo()
    loader.reset()


@pytest.fixture
def all_built(fresh: pytest.MonkeyPatch):
    fresh.setattr(loader, "library_path", lambda v: Path(f"/pkg/_kernels_{v}.so"))
    return fresh


@pytest.mark.parametrize("flags, expected", [
    (V4 | {"avx512_bf16", "avx512_vnni", "avx512vbmi", "amx_tile"}, "avx512bf16"),
    (V4 | {"avx512_vnni"}, "avx512"),  # no BF16: the next best
    (V3, "avx2"),
])
def test_choose_takes_the_best_variant_the_cpu_runs(all_built, flags, expected) -> None:
    assert loader.choose(flags)[0] == expected


def test_choose_skips_a_variant_that_was_not_built(fresh: pytest.MonkeyPatch) -> None:
    fresh.setattr(loader, "library_path", lambda v: None if v == "avx512bf16" else Path(f"/x/{v}.so"))
    assert loader.choose(V4 | {"avx512_bf16", "avx512_vnni", "avx512vbmi"})[0] == "avx512"


def test_choose_names_what_is_missing(all_built) -> None:
    with pytest.raises(RuntimeError, match="needs at least AVX2"):
        loader.choose({"sse4_2", "avx"})
    all_built.setenv(loader.ISA_ENV, "avx9000")
    with pytest.raises(RuntimeError, match=r"'avx9000' is not a kernel variant; expected one of \['avx512bf16'"):
        loader.choose(V4)
    all_built.setenv(loader.ISA_ENV, "avx512bf16")
    with pytest.raises(RuntimeError, match="this CPU lacks avx512_bf16, avx512_vnni, avx512vbmi"):
        loader.choose(V4)
    all_built.setenv(loader.ISA_ENV, "avx2")
    assert loader.choose(V4)[0] == "avx2"


def test_every_variant_this_cpu_runs_was_built() -> None:
    runnable = loader.supported_variants()
    if not runnable:
        pytest.skip("this CPU runs none of the kernel variants")
    assert set(runnable) <= set(loader.built_variants()), (runnable, loader.built_variants(), loader.PACKAGE_DIR)


def test_load_logs_the_variant_and_its_code_paths(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    # as in a fresh process; the same file loads again (dlopen hands back the loaded library: keep
    # NEUTRINO_KERNEL_ISA as it is, a second variant's ops could not register beside the first's)
    monkeypatch.setattr(loader, "_loaded", None)
    loader.reset()
    with caplog.at_level(logging.INFO, logger=loader.__name__):
        kernels = loader.load()
    monkeypatch.undo()
    loader.reset()
    assert kernels is not None, loader.last_error
    assert kernels.variant in VARIANTS and kernels.path.exists()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(f"variant {kernels.variant}" in m and kernels.attention_isa in m for m in messages), messages


def test_env_variant_is_the_one_loaded() -> None:
    want = os.environ.get(loader.ISA_ENV)
    kernels = loader.load()
    assert kernels is not None, loader.last_error
    if want:
        assert kernels.variant == want
    else:
        assert kernels.variant == loader.supported_variants()[0]


def test_kernels_run_without_a_compiler_on_path(tmp_path: Path) -> None:
    code = ("import torch; from neutrino.kernels import loader; k = loader.load(); assert k, loader.last_error; "
            "x = torch.randn(3, 64); q, s = torch.ops.neutrino_quant.quantize_per_token(x); "
            "assert q.dtype == torch.int8 and torch.allclose(q.float() * s[:, None], x, atol=s.max().item())")
    env = {**os.environ, "PATH": str(tmp_path)}  # no c++, gcc or ninja reachable
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_op_on_every_variant(variant: str) -> None:
    if os.environ.get(loader.ISA_ENV):
        pytest.skip("already inside a per-variant run")
    if variant not in loader.supported_variants():
        pytest.skip(f"this CPU can't run the {variant} variant")
    if variant == loader.supported_variants()[0]:
        pytest.skip(f"{variant} is the default here: the kernel tests of this session ran on it")
    env = {**os.environ, loader.ISA_ENV: variant}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TESTS]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout.splitlines()[-1]
