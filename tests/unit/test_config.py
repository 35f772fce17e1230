"""Engine configuration rejects bad values with errors that name them."""

import pytest
import torch

from neutrino.config import CacheConfig, SchedulerConfig
from neutrino.errors import ConfigError
from neutrino.runner.device import resolve_device, resolve_dtype


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"),
        ({"max_model_len": -1}, "max_model_len"),
    ],
)
def test_scheduler_config_rejects_non_positive(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        SchedulerConfig(**kwargs)


def test_scheduler_config_without_chunking_needs_room_for_a_whole_prompt():
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        SchedulerConfig(max_num_batched_tokens=64, enable_chunked_prefill=False, max_model_len=128)


@pytest.mark.parametrize(("kwargs", "name"), [({"block_size": 12}, "block_size"), ({"num_blocks": 0}, "num_blocks"),
                                              ({"kv_cache_memory": 0}, "kv_cache_memory")])
def test_cache_config_rejects_bad_values(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        CacheConfig(**kwargs)


def test_device_and_dtype_names():
    assert resolve_device("cpu").type == "cpu"
    assert str(resolve_dtype("bf16", resolve_device("cpu"))) == "torch.bfloat16"
    with pytest.raises(ConfigError, match="dtype 'int3'"):
        resolve_dtype("int3", resolve_device("cpu"))
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_follows_the_cpus_bf16_gemm(native, monkeypatch):
    import neutrino.runner.device as device

    monkeypatch.setattr(device, "cpu_has_bf16_gemm", lambda: native)
    want = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", resolve_device("cpu")) == want
    assert resolve_dtype("bfloat16", resolve_device("cpu")) == torch.bfloat16  # an explicit choice stands
