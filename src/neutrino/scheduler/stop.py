"""Stop conditions checked after each sampled token (token-level; stop strings are the detokenizer's)."""

from __future__ import annotations

from collections.abc import Container

from neutrino.request import Request, RequestStatus


def check_stop(request: Request, eos_token_ids: Container[int], max_model_len: int) -> bool:
    """Decide whether `request`'s last output token ends it; if so set its status (and stop_reason).

    Order: a stop token id (stop_reason = that id), then EOS (`request.eos_token_id` or any of
    `eos_token_ids`, unless `ignore_eos`), then the length limits (`max_tokens`, `max_model_len`).
    Stop tokens and EOS only count once `min_tokens` tokens precede them (the sampler is expected
    to mask them while `num_output_tokens < min_tokens`; this is the backstop).
    """
    params = request.sampling_params
    token_id = request.output_token_ids[-1]
    if request.num_output_tokens > params.min_tokens:
        if token_id in params.stop_token_ids:
            request.status = RequestStatus.FINISHED_STOPPED
            request.stop_reason = token_id
            return True
        if not params.ignore_eos and (token_id == request.eos_token_id or token_id in eos_token_ids):
            request.status = RequestStatus.FINISHED_STOPPED
            return True
    if request.num_output_tokens >= request.max_tokens or request.num_tokens >= max_model_len:
        request.status = RequestStatus.FINISHED_LENGTH
        return True
    return False
