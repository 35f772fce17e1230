"""The runner's flat input batch: the decode-only fast path builds the same tensors as the general path."""

from __future__ import annotations

import torch

from neutrino.runner import input_batch
from neutrino.runner.input_batch import PersistentBatch, build_input_batch
from neutrino.runner.request_states import RequestStates
from neutrino.sampling_params import SamplingParams
from neutrino.scheduler.output import NewRequestData, ScheduledRequest, SchedulerOutput

BS = 4
CPU = torch.device("cpu")


def test_decode_fast_path_equals_general_path() -> None:
    prompts = {"a": list(range(10, 15)), "b": list(range(20, 28)), "c": [7, 8, 9]}
    blocks = {"a": [5, 2], "b": [0, 7], "c": [3]}  # scattered blocks
    states, batch = RequestStates(4), PersistentBatch(4, 8)
    first = SchedulerOutput([ScheduledRequest(r, len(p), 0, blocks[r], True) for r, p in prompts.items()],
                            16, [NewRequestData(r, p, SamplingParams(), None) for r, p in prompts.items()])
    assert not build_input_batch(first, states.apply(first), batch, BS, CPU).meta.decode_only
    for r in prompts:
        states[r].all_token_ids.append(100 + ord(r))  # the sampled token
    new_blocks = {"a": [], "b": [4], "c": [6]}  # b crosses into a new block; c gets one ahead
    second = SchedulerOutput([ScheduledRequest(r, 1, len(p), new_blocks[r], r != "c") for r, p in prompts.items()], 3)
    scheduled = states.apply(second)
    fast = build_input_batch(second, scheduled, batch, BS, CPU)
    general = input_batch._general_batch(second, scheduled, batch, BS, CPU)
    assert fast.meta.decode_only and general.meta.decode_only
    for name in ("input_ids", "positions"):
        assert torch.equal(getattr(fast, name), getattr(general, name)), name
    for name in ("slot_mapping", "block_tables", "seq_lens_tensor"):
        assert torch.equal(getattr(fast.meta, name), getattr(general.meta, name)), name
    assert fast.input_ids.tolist() == [197, 198, 199]
    assert fast.meta.seq_lens == general.meta.seq_lens == [6, 9, 4]
    assert fast.meta.query_start_loc == general.meta.query_start_loc == [0, 1, 2, 3]
    assert fast.sample_indices == general.sample_indices == [0, 1]
    assert fast.sample_request_ids == general.sample_request_ids == ["a", "b"]
    assert fast.meta.slot_mapping.tolist() == [2 * BS + 1, 4 * BS + 0, 3 * BS + 3]
