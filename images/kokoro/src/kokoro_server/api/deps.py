"""Request dependencies: the app's state and API-key checks."""
from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request

from ..errors import ApiError


def state(request: Request):
    return request.app.state.kokoro


State = Annotated[Any, Depends(state)]  # the app's AppState (typed Any: no import cycle)


def require_api_key(request: Request) -> None:
    """Bearer token check in constant time against every configured key.

    The key itself is never logged or echoed; failures name only what was wrong.
    """
    keys: tuple[tuple[str, str], ...] = request.app.state.kokoro.named_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing_api_key",
                       "missing API key: send 'Authorization: Bearer <key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    supplied = token.strip().encode()
    matched = None
    for name, key in keys:  # no early exit: time does not depend on which key matched
        if hmac.compare_digest(supplied, key.encode()):
            matched = name
    if matched is None:
        raise ApiError(401, "invalid_api_key", "invalid API key",
                       headers={"WWW-Authenticate": "Bearer"})
    request.state.kokoro_key = matched  # the key's name (quota.py), never the key


def require_key_and_quota(request: Request) -> None:
    """The API key check, then the key's quota (429 when over): the routes that do work.
    Runs before any text work or synthesis, so a refused request costs neither."""
    require_api_key(request)
    request.app.state.kokoro.quotas.admit(getattr(request.state, "kokoro_key", None))
