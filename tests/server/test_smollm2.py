"""`neutrino serve` with no model argument serves the embedded SmolLM2-135M-Instruct; its answers make
sense and match the offline API's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from conftest import ServerProcess, launch

MATH = [{"role": "user", "content": "What is 2+2? Answer with just the number."}]


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = launch(None, tmp_path_factory.mktemp("smollm2") / "server.log", "--kv-cache-memory", "64MiB",
                 api_key=None)
    yield srv
    assert srv.stop() == 0


def test_chat_answer_makes_sense(smollm2: ServerProcess) -> None:
    client = openai.OpenAI(base_url=smollm2.base_url + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    assert model == "SmolLM2-135M-Instruct"
    # no max_tokens: up to what fits in the 64 MiB KV cache (far less than the 8192-token context)
    reply = client.chat.completions.create(model=model, messages=MATH, temperature=0)
    assert "4" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"  # the model ends its turn with <|im_end|>
    text = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6,
                                     temperature=0).choices[0].text
    assert "Paris" in text
