"""From OpenAI request fields to the engine's SamplingParams and prompts."""

from __future__ import annotations

from typing import Any

from neutrino.engine.async_llm import AsyncLLM
from neutrino.errors import InvalidParameterError
from neutrino.sampling_params import SamplingParams
from neutrino.server.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingRequest

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
_PASSTHROUGH = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "top_k", "min_p",
                "repetition_penalty", "ignore_eos", "min_tokens", "stop_token_ids", "include_stop_str_in_output",
                "skip_special_tokens")


def sampling_params(req: SamplingRequest, max_tokens: int | None, logprobs: int | None,
                    vocab_size: int) -> SamplingParams:
    """Validated SamplingParams (InvalidParameterError names the bad field)."""
    if req.stream_options is not None and not req.stream:
        raise InvalidParameterError("stream_options", "is only allowed when 'stream' is true")
    kwargs: dict[str, Any] = {name: getattr(req, name) for name in _PASSTHROUGH if getattr(req, name) is not None}
    if isinstance(req.top_k, int) and req.top_k >= vocab_size:
        kwargs["top_k"] = 0  # keeping the whole vocabulary is no filter (and huge values overflow int64)
    kwargs["n"] = 1 if req.n is None else req.n
    kwargs["max_tokens"] = max_tokens
    kwargs["logprobs"] = logprobs
    if req.stop is not None:
        kwargs["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    if req.logit_bias:
        kwargs["logit_bias"] = parse_logit_bias(req.logit_bias, vocab_size)
    return SamplingParams(**kwargs)


def parse_logit_bias(bias: dict[str, float], vocab_size: int) -> dict[int, float]:
    """OpenAI sends token ids as JSON object keys (strings)."""
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidParameterError("logit_bias", f"keys must be token ids, got {key!r}") from None
        if not 0 <= token < vocab_size:
            raise InvalidParameterError("logit_bias", f"token id {token} is not in [0, {vocab_size})")
        out[token] = value
    return out


def completion_params(req: CompletionRequest, vocab_size: int) -> SamplingParams:
    if req.suffix is not None:
        raise InvalidParameterError("suffix", "is not supported by this server")
    n = 1 if req.n is None else req.n
    if req.best_of is not None and req.best_of != n:
        raise InvalidParameterError("best_of", f"only best_of == n is supported, got best_of {req.best_of}, n {n}")
    if req.echo and req.logprobs is not None:
        raise InvalidParameterError("echo", "echo together with logprobs is not supported")
    max_tokens = COMPLETION_DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
    return sampling_params(req, max_tokens, req.logprobs, vocab_size)


def chat_params(req: ChatCompletionRequest, vocab_size: int, default_max_tokens: int) -> SamplingParams:
    """`default_max_tokens` applies when neither max_completion_tokens nor max_tokens is given."""
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidParameterError("top_logprobs", "requires 'logprobs' to be true")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return sampling_params(req, default_max_tokens if max_tokens is None else max_tokens, logprobs, vocab_size)


def completion_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """One engine prompt per element of a batched `prompt` (a str, token ids, or a list of either)."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidParameterError("prompt", "must not be empty")
    if isinstance(prompt[0], int):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def render_chat(llm: AsyncLLM, messages: list[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a conversation rendered with the model's chat template."""
    if not messages:
        raise InvalidParameterError("messages", "must contain at least one message")
    if llm.tokenizer.chat_template is None:
        raise InvalidParameterError("messages", "this model has no chat template; use /v1/completions")
    conversation = [_message_dict(i, m) for i, m in enumerate(messages)]
    try:
        ids = llm.tokenizer.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                                tokenize=True)
    except Exception as exc:  # jinja raises TemplateError etc. for conversations the template refuses
        raise InvalidParameterError("messages", f"the chat template cannot render them: {exc}") from None
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]  # type: ignore[call-overload, index]  # a BatchEncoding
    return list(ids)


def _message_dict(index: int, msg: ChatMessage) -> dict[str, Any]:
    role = "system" if msg.role == "developer" else msg.role
    content = msg.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            where = f"messages[{index}].content[{j}]"
            if part.type != "text":
                raise InvalidParameterError(where, f"only text content parts are supported, got type {part.type!r}")
            if part.text is None:
                raise InvalidParameterError(where, "a text content part needs a 'text' string")
            texts.append(part.text)
        content = "\n".join(texts)
    out: dict[str, Any] = {"role": role, "content": content or ""}
    if msg.name is not None:
        out["name"] = msg.name
    return out
