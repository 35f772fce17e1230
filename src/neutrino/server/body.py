"""Reading and validating a JSON request body, and checking the requested model name."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from neutrino.server.errors import APIError, validation_error
from neutrino.server.state import ServerContext

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, model: type[M]) -> M:
    """Parse the body strictly as `model`; any problem is a 400 naming the parameter (413 when the
    body is over the limit, raised while reading)."""
    raw = await request.body()
    if not raw.strip():
        raise APIError(400, "request body is empty; expected a JSON object")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"request body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                            f"{exc.start})") from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


def check_model(ctx: ServerContext, name: str | None) -> None:
    """404 unless `name` is the served model (or one of its aliases); no name means the served one."""
    if not ctx.settings.accepts_model(name):
        raise APIError(404, f"The model `{name}` does not exist. This server serves "
                            f"`{ctx.settings.served_model_name}`.", param="model", code="model_not_found")
