"""`neutrino serve [MODEL]`: the OpenAI-compatible HTTP server (FastAPI + uvicorn).

Every server option also reads a NEUTRINO_* environment variable (the flag wins). SIGTERM or SIGINT
drains: new requests get 503, requests in flight finish (up to --shutdown-grace seconds, then they are
aborted), and the process exits 0. A second SIGINT exits at once.

Threads: torch's OpenMP threads spin-wait by default and starve the event loop's thread on small
machines, so `serve` sets OMP_WAIT_POLICY=PASSIVE before torch is imported unless it is already set
(export OMP_WAIT_POLICY=ACTIVE to override), with GOMP_SPINCOUNT=20000 (unless set): a short spin
that bridges the gaps between the ops of one step before a thread sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
from collections.abc import Callable
from typing import Any

from neutrino.cli.engine_flags import add_engine_flags, engine_args_from, parse_bytes
from neutrino.errors import InvalidParameterError

# flag dest -> (environment variable, parser)
LOG_LEVELS = ("debug", "info", "warning", "error")
ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "host": ("NEUTRINO_HOST", str),
    "port": ("NEUTRINO_PORT", int),
    "served_model_name": ("NEUTRINO_SERVED_MODEL_NAME", str),
    "max_queued_requests": ("NEUTRINO_MAX_QUEUED_REQUESTS", int),
    "max_body_size": ("NEUTRINO_MAX_BODY_SIZE", parse_bytes),
    "shutdown_grace": ("NEUTRINO_SHUTDOWN_GRACE", float),
    "kv_cache_memory": ("NEUTRINO_KV_CACHE_MEMORY", parse_bytes),
    "max_num_seqs": ("NEUTRINO_MAX_NUM_SEQS", int),
    "max_model_len": ("NEUTRINO_MAX_MODEL_LEN", int),
    "dtype": ("NEUTRINO_DTYPE", str),
    "device": ("NEUTRINO_DEVICE", str),
    "log_level": ("NEUTRINO_LOG_LEVEL", lambda v: _choice(v, LOG_LEVELS)),
    "engine_process": ("NEUTRINO_ENGINE_PROCESS", lambda v: _boolean(v)),
}


def _boolean(value: str) -> bool:
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError("expected 1, 0, true, false, yes or no")
    return value.lower() in ("1", "true", "yes")


def _choice(value: str, choices: tuple[str, ...]) -> str:
    if value.lower() not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return value.lower()


def set_thread_env(argv: list[str]) -> None:
    """Called by the CLI before anything imports torch: passive OpenMP waiting, after a short spin, for
    `serve` (the user's own settings win)."""
    if "serve" in argv[:3] and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_engine_flags(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind [NEUTRINO_HOST] (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one [NEUTRINO_PORT]")
    g.add_argument("--served-model-name", default=None,
                   help="model name clients use [NEUTRINO_SERVED_MODEL_NAME] (default: the model's name)")
    g.add_argument("--api-key", action="append", default=[],
                   help="accepted Bearer key, repeatable [NEUTRINO_API_KEY, comma-separated]")
    g.add_argument("--max-queued-requests", type=int, default=256,
                   help="sequences allowed to wait beyond --max-num-seqs before 429 [NEUTRINO_MAX_QUEUED_REQUESTS]")
    g.add_argument("--max-body-size", type=parse_bytes, default=1024 * 1024,
                   help="largest request body, e.g. 1MiB [NEUTRINO_MAX_BODY_SIZE]")
    g.add_argument("--shutdown-grace", type=float, default=30.0,
                   help="seconds SIGTERM waits for requests in flight [NEUTRINO_SHUTDOWN_GRACE]")
    g.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="[NEUTRINO_LOG_LEVEL]")
    g.add_argument("--log-format", default="json", choices=["json", "text"], help="log line format")
    g.add_argument("--engine-process", action=argparse.BooleanOptionalAction, default=True,
                   help="run the engine core in its own process, apart from HTTP and tokenization "
                        "(default); --no-engine-process runs it on a thread of the server [NEUTRINO_ENGINE_PROCESS]")
    try:
        defaults = env_defaults()
    except InvalidParameterError as exc:  # reported when `serve` runs, not while building the parser
        defaults = {"env_error": exc}
    p.set_defaults(func=run_serve, **defaults)


def env_defaults(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Flag defaults from NEUTRINO_* variables; a bad value names the variable."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for dest, (name, parse) in ENV_VARS.items():
        if env.get(name):
            try:
                out[dest] = parse(env[name])
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise InvalidParameterError(name, f"cannot parse {env[name]!r}: {exc}") from None
    return out


def check_server_flags(ns: argparse.Namespace) -> None:
    """Reject bad server options before the (slow) model load."""
    if getattr(ns, "env_error", None) is not None:
        raise ns.env_error
    if not 0 <= ns.port <= 65535:
        raise InvalidParameterError("--port", f"must be in [0, 65535], got {ns.port}")
    for name in ("max_queued_requests", "shutdown_grace"):
        if getattr(ns, name) < 0:
            raise InvalidParameterError("--" + name.replace("_", "-"), f"must be >= 0, got {getattr(ns, name)}")


def settings_from(ns: argparse.Namespace, model_name: str, model_path: str) -> Any:
    from neutrino.server.settings import ServerSettings

    keys = list(ns.api_key) + [k.strip() for k in os.environ.get("NEUTRINO_API_KEY", "").split(",") if k.strip()]
    served = ns.served_model_name or model_name
    return ServerSettings(host=ns.host, port=ns.port, served_model_name=served,
                          model_aliases=tuple({model_name, model_path} - {served}), api_keys=tuple(keys),
                          max_body_bytes=ns.max_body_size, shutdown_grace_s=ns.shutdown_grace)


def run_serve(ns: argparse.Namespace) -> int:
    check_server_flags(ns)
    args = engine_args_from(ns)
    from neutrino.server.logs import configure_logging

    configure_logging(ns.log_level, ns.log_format)
    from neutrino.engine.async_llm import AsyncLLM  # imports torch

    llm = AsyncLLM.from_engine_args(args, max_queued=ns.max_queued_requests, engine_process=ns.engine_process,
                                    log_setup=functools.partial(configure_logging, ns.log_level, ns.log_format))
    settings = settings_from(ns, llm.info.model_name, llm.info.model_path)
    from neutrino.server.app import build_app
    from neutrino.server.uvicorn_server import serve

    asyncio.run(serve(build_app(llm, settings)))
    return 0
