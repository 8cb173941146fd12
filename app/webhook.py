"""The batch callback: which URLs may be called, and the POST of a finished batch's summary.

A callback URL is called by the server, from inside its network: one pointing at the server itself,
at a private network or at a cloud metadata address would let any caller reach what only the server
can (server-side request forgery). So its host is resolved and *every* address must be public;
this is checked at submission (422) and again just before the POST (DNS may answer differently by
then). Redirects are not followed. ``ELFSCREEN_CALLBACK_ALLOW_PRIVATE=1`` lifts the rule (tests,
a service on a private network that calls back inside it).
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from urllib.parse import urlsplit

import httpx

from elfscreen.app.config import Settings
from elfscreen.app.store import Store
from elfscreen.model.errors import InputError

log = logging.getLogger("elfscreen.webhook")
RESOLVE_TIMEOUT_S = 3.0
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="elfscreen-resolve")


class CallbackRefused(InputError):
    """The callback URL is not an http(s) URL to a public address (HTTP 422)."""

    code = "invalid_callback"


def check_callback_url(url: str, settings: Settings) -> str:
    """``url`` if the server may POST to it, else raise :class:`CallbackRefused` naming the problem."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise CallbackRefused("callback_url", f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("callback_url", "must be an http(s) URL with a host")
    if settings.callback_allow_private:
        return url
    future = _resolver.submit(socket.getaddrinfo, parts.hostname, port, type=socket.SOCK_STREAM)
    try:
        addresses = {info[4][0] for info in future.result(timeout=RESOLVE_TIMEOUT_S)}
    except FutureTimeout:
        raise CallbackRefused("callback_url", f"host {parts.hostname} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, UnicodeError) as exc:
        raise CallbackRefused("callback_url", f"host {parts.hostname} cannot be resolved ({exc})") from None
    for address in sorted(addresses):
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise CallbackRefused("callback_url", f"host {parts.hostname} resolves to {ip}, a loopback, private, "
                                                  "link-local or reserved address; callbacks go to public addresses only")
    return url


def notify_batch(store: Store, batch_id: str, settings: Settings) -> None:
    """POST the batch summary to its callback URL once every job has finished (one sender wins)."""
    batch = store.take_callback(batch_id)
    if not batch:
        return
    rows, _ = store.list_jobs(batch["owner"], batch_id=batch_id, limit=batch["total"])
    body = {"batch_id": batch_id, "total": batch["total"],
            "jobs": [{"id": r["id"], "name": r["name"], "status": r["status"]} for r in rows]}
    try:
        url = check_callback_url(batch["callback_url"], settings)
    except CallbackRefused as err:
        log.warning("batch %s: callback not sent: %s", batch_id, err)
        store.callback_done(batch_id, False)
        return
    ok = False
    for attempt in range(3):
        try:
            ok = httpx.post(url, json=body, timeout=settings.callback_timeout_s).is_success
        except httpx.HTTPError:
            ok = False
        if ok:
            break
        time.sleep(2 ** attempt)
    store.callback_done(batch_id, ok)
