"""The client's exceptions. A structure that fails is not an exception: it is an
:class:`~elfscreen.client.outcome.Outcome` with ``status == "failed"`` and the server's error object."""
from __future__ import annotations


class ClientError(Exception):
    """The request as a whole could not be done: server unreachable after retries, bad options, …"""


class ServerError(ClientError):
    """The server answered an error that is not about one structure (``status``: the HTTP status;
    ``code``, ``message``, ``input``: the ``{"error": {…}}`` body, e.g. 401 ``unauthorized``)."""

    def __init__(self, status: int, code: str, message: str, input_name: str | None = None):
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.input = status, code, message, input_name


class ScreeningFailed(ClientError):
    """:meth:`Client.screen` of a structure that could not be screened; ``error`` is its error object."""

    def __init__(self, error: dict):
        super().__init__(error.get("message", "screening failed"))
        self.error = error
