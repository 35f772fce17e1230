"""Request bodies of the OpenAI-compatible API (pydantic v2, strict).

Every field the official `openai` client may send is accepted; unknown fields are rejected (400 naming
the field). Fields for features this server does not have (tools, response_format, audio, ...) are
accepted by the schema and answered with a clear 400 by `unsupported_fields` when set."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """No coercion (a string is not a number), no unknown fields, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(StrictModel):
    include_usage: bool | None = False
    include_obfuscation: bool | None = None  # accepted, ignored
    continuous_usage_stats: bool | None = False  # vLLM extension: usage in every chunk


class SamplingRequest(StrictModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # extensions (vLLM names)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None


class CompletionRequest(SamplingRequest):
    """POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = False
    best_of: int | None = None
    suffix: str | None = None


class ContentPart(BaseModel):
    """One part of a message's content; only `{"type": "text", "text": ...}` is supported."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None  # accepted in assistant history, ignored
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any = None
    audio: Any = None


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    logprobs: bool | None = False
    top_logprobs: int | None = None
    max_completion_tokens: int | None = None
    add_generation_prompt: bool = True  # extension
    # accepted and ignored: they do not change the result here
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: Any = None
    safety_identifier: str | None = None
    parallel_tool_calls: bool | None = None
    verbosity: str | None = None
    reasoning_effort: str | None = None
    moderation: Any = None
    # accepted by the schema, refused when set (features this server does not have)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    web_search_options: Any = None


_CHAT_UNSUPPORTED = ("tools", "functions", "function_call", "audio", "prediction", "web_search_options")


def unsupported_fields(req: ChatCompletionRequest) -> tuple[str, str] | None:
    """(param, message) for the first set field naming a feature this server does not have."""
    for name in _CHAT_UNSUPPORTED:
        if getattr(req, name) not in (None, []):
            return name, f"{name!r} is not supported by this server (no tool calling, audio or web search)"
    if req.tool_choice not in (None, "none"):
        return "tool_choice", "'tool_choice' is not supported by this server (no tool calling)"
    if req.response_format is not None and _format_type(req.response_format) != "text":
        return "response_format", "only response_format {\"type\": \"text\"} is supported (no JSON mode)"
    if req.modalities is not None and any(m != "text" for m in req.modalities):
        return "modalities", "only the 'text' modality is supported"
    for i, msg in enumerate(req.messages):
        if msg.tool_calls or msg.function_call is not None or msg.audio is not None:
            return f"messages[{i}]", "tool calls and audio in messages are not supported"
    return None


def _format_type(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else value


class TokenizeRequest(StrictModel):
    """POST /tokenize: either `prompt` or `messages` (rendered with the chat template)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(StrictModel):
    """POST /detokenize."""

    model: str | None = None
    tokens: list[int]
