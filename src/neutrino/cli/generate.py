"""`neutrino generate` (one prompt, streamed) and `neutrino chat` (interactive, with history)."""

from __future__ import annotations

import argparse
import sys

from neutrino.cli.engine_flags import (
    add_engine_flags,
    add_sampling_flags,
    engine_args_from,
    sampling_params_from,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a completion for a prompt (argument or stdin), streamed",
                       description="Generate text from a prompt given as an argument or on stdin.")
    add_engine_flags(p, model_positional=False)
    p.add_argument("prompt", nargs="?", default=None, help="prompt text (default: read stdin)")
    p.add_argument("-m", "--model", default=None, help="HF directory or .gguf file (default: embedded SmolLM2)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    add_sampling_flags(p)
    p.set_defaults(func=run_generate)

    c = sub.add_parser("chat", help="interactive chat with history", description="Chat with the model; "
                       "empty line or Ctrl-D exits, /reset clears the history.")
    add_engine_flags(c, model_positional=False)
    c.add_argument("-m", "--model", default=None, help="HF directory or .gguf file (default: embedded SmolLM2)")
    c.add_argument("--system", default=None, help="system message")
    add_sampling_flags(c)
    c.set_defaults(func=run_chat)


def _stream(llm, prompt, params, out=sys.stdout) -> str:
    text = []
    for step in llm.stream(prompt, params):
        delta = step.outputs[0].delta_text
        if delta:
            out.write(delta)
            out.flush()
            text.append(delta)
    out.write("\n")
    out.flush()
    return "".join(text)


def run_generate(ns: argparse.Namespace) -> int:
    from neutrino.engine.llm import LLM
    from neutrino.errors import InvalidParameterError

    prompt = ns.prompt if ns.prompt is not None else sys.stdin.read()
    if not prompt.strip():
        raise InvalidParameterError("prompt", "empty prompt (give it as an argument or on stdin)")
    params = sampling_params_from(ns)
    args = engine_args_from(ns)
    llm = LLM(**vars(args))
    tokens = llm.apply_chat_template([{"role": "user", "content": prompt}]) if ns.chat else prompt
    _stream(llm, tokens, params)
    return 0


def run_chat(ns: argparse.Namespace) -> int:
    from neutrino.engine.llm import LLM

    params = sampling_params_from(ns)
    llm = LLM(**vars(engine_args_from(ns)))
    history: list[dict[str, str]] = [{"role": "system", "content": ns.system}] if ns.system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(">>> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            return 0
        if line.strip() == "/reset":
            history = history[:1] if ns.system else []
            continue
        history.append({"role": "user", "content": line.strip()})
        reply = _stream(llm, llm.apply_chat_template(history), params)
        history.append({"role": "assistant", "content": reply})
