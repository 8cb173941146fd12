"""Who may call the API and how much: API keys, a per-key rate limit, and the request body cap."""
from __future__ import annotations

import hashlib
import json
import threading
import time

from fastapi import Request

from elfscreen.app.config import Settings


class ApiError(Exception):
    """An HTTP error with the result schema's error body: ``{"error": {"code", "message", "input"}}``."""

    def __init__(self, status: int, code: str, message: str, input_name: str | None = None,
                 headers: dict | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.input_name = status, code, message, input_name
        self.headers, self.extra = headers, extra or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "input": self.input_name}, **self.extra}


def owner_of(request: Request, settings: Settings) -> str:
    """The caller's identity: a hash of its API key, or ``anonymous`` when keys are not required.
    Raises 401 when keys are required and the request has none or an unknown one."""
    if not settings.api_keys:
        return "anonymous"
    key = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    if not key:
        raise ApiError(401, "unauthorized", "an API key is required: send it as the X-API-Key header",
                       headers={"WWW-Authenticate": "Bearer"})
    if key not in settings.api_keys:
        raise ApiError(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class RateLimiter:
    """Token bucket per caller: ``per_min`` submissions a minute, bursts up to ``per_min``.
    Counted in this API process (run one API process per limit, or put the limit in a proxy)."""

    def __init__(self, per_min: int):
        self.per_min = per_min
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, who: str) -> None:
        """Take one token for ``who`` or raise 429 with ``Retry-After`` (s)."""
        if self.per_min <= 0:
            return
        rate = self.per_min / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(who, (float(self.per_min), now))
            tokens = min(float(self.per_min), tokens + (now - at) * rate)
            if tokens < 1:
                wait = (1 - tokens) / rate
                self._buckets[who] = (tokens, now)
                raise ApiError(429, "rate_limited", f"more than {self.per_min} submissions a minute; retry in {wait:.0f} s",
                               headers={"Retry-After": str(max(1, round(wait)))})
            self._buckets[who] = (tokens - 1, now)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413), declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_413(send, self.limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the request body is larger than the limit of {limit:,} bytes", "request")


async def _send_413(send, limit: int) -> None:
    body = json.dumps(too_large(limit).body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
