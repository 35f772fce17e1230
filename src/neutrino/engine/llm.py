"""The offline API: `LLM(model=...).generate(prompts, SamplingParams)`, `chat`, and streaming."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from neutrino.engine.args import EngineArgs
from neutrino.engine.llm_engine import LLMEngine
from neutrino.errors import InvalidParameterError
from neutrino.outputs import RequestOutput
from neutrino.sampling_params import SamplingParams

Prompt = str | list[int]
Message = dict[str, Any]


class LLM:
    """An engine plus a loop that runs requests to completion (vLLM's offline `LLM` class)."""

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(EngineArgs.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(sorted(unknown)[0], f"unknown engine option; known: "
                                        f"{', '.join(sorted(EngineArgs.__dataclass_fields__))}")
        self.engine = LLMEngine(EngineArgs(model=model, **kwargs))
        self.tokenizer = self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in prompt order."""
        prompt_list = _as_prompt_list(prompts)
        params = _as_params_list(sampling_params, len(prompt_list))
        ids = [self.engine.next_request_id() for _ in prompt_list]
        try:
            for rid, prompt, p in zip(ids, prompt_list, params, strict=True):
                self.engine.add_request(rid, prompt, p)
            finished = self._run(len(ids), use_tqdm)
        except BaseException:
            self.engine.abort_request(ids)
            raise
        return [finished[rid] for rid in ids]

    def _run(self, total: int, use_tqdm: bool) -> dict[str, RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="requests", unit="req")
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.finished:
                    finished[out.request_id] = out
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return finished

    def stream(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> Iterator[RequestOutput]:
        """Yield a RequestOutput after every step that changed it (`delta_text` holds the new text).
        Closing the iterator early aborts the request."""
        rid = self.engine.next_request_id()
        self.engine.add_request(rid, prompt, sampling_params)
        done = False
        try:
            while not done:
                for out in self.engine.step():
                    if out.request_id == rid:
                        done = out.finished
                        yield out
        finally:
            if not done:
                self.engine.abort_request(rid)

    def apply_chat_template(self, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation rendered with the model's chat template."""
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise InvalidParameterError("messages", "expected a list of {'role': ..., 'content': ...} dicts")
        if self.tokenizer.chat_template is None:
            raise InvalidParameterError("messages", "this model has no chat template")
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                 tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]  # type: ignore[call-overload, index]  # a BatchEncoding
        return list(ids)

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Generate replies to one conversation or a list of conversations using the chat template."""
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        prompts = [self.apply_chat_template(conv) for conv in conversations]  # type: ignore[arg-type]
        return self.generate(prompts, sampling_params, use_tqdm)


def _as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, list) and prompts and isinstance(prompts[0], int):
        return [prompts]  # type: ignore[list-item]
    items = list(prompts)
    if not items:
        raise InvalidParameterError("prompts", "expected at least one prompt")
    return items


def _as_params_list(params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * n
    if isinstance(params, SamplingParams):
        return [params] * n
    items = list(params)
    if len(items) != n:
        raise InvalidParameterError("sampling_params", f"got {len(items)} for {n} prompts; expected one or {n}")
    return items
