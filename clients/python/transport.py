"""HTTP to an elfscreen server, with retries: connection errors, 429 (after ``Retry-After``) and
502/503/504 are retried with exponential backoff and jitter; every other answer is returned."""
from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

import httpx

from elfscreen.client.errors import ClientError, ServerError
from elfscreen.model import __version__

RETRY_STATUS = frozenset({429, 502, 503, 504})
NOT_TRANSIENT = frozenset({"dft_unavailable"})  # 503 codes a retry cannot change (no Quantum ESPRESSO)
API_KEY_HEADER = "X-API-Key"  # app/access.py also accepts "Authorization: Bearer KEY"


class Http:
    """A connection pool to ``base_url``. ``timeout``: seconds per request; ``retries``: extra attempts
    after a transient failure; waits grow as ``backoff_s``·2^attempt (±50 % jitter), at most
    ``max_wait_s``, and never less than the server's ``Retry-After``."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0, retries: int = 5,
                 backoff_s: float = 0.5, max_wait_s: float = 60.0):
        headers = {"User-Agent": f"elfscreen-client/{__version__}"}
        if api_key:
            headers[API_KEY_HEADER] = api_key
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s, self.max_wait_s = retries, backoff_s, max_wait_s
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The server's answer, after retrying transient failures; raises :class:`ClientError` when the
        server cannot be reached or stays unavailable."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ClientError(f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})") from exc
                time.sleep(self._backoff(attempt))
                continue
            if response.status_code not in RETRY_STATUS or last or _code(response) in NOT_TRANSIENT:
                return response
            time.sleep(max(self._backoff(attempt), _retry_after(response)))
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs):
        """The JSON body of a 2xx answer; any other answer raises :class:`ServerError`."""
        response = self.request(method, path, **kwargs)
        if not response.is_success:
            raise server_error(response)
        return response.json()

    def close(self) -> None:
        self._client.close()

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.5)


def _retry_after(response: httpx.Response) -> float:
    """``Retry-After`` in seconds (a number or an HTTP date), 0 when absent."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return 0.0


def _code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def error_body(response: httpx.Response) -> dict:
    """The ``{"error": {…}}`` body of an error answer (a made-up one when the body is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body
    return {"error": {"code": f"http_{response.status_code}", "message": response.text[:300] or response.reason_phrase,
                      "input": None}}


def server_error(response: httpx.Response) -> ServerError:
    err = error_body(response)["error"]
    return ServerError(response.status_code, err.get("code", ""), err.get("message", ""), err.get("input"))
