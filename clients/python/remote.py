"""Jobs on an elfscreen server (``POST /v1/screenings``, then polling the jobs)."""
from __future__ import annotations

import re

from elfscreen.client.inputs import Item
from elfscreen.client.transport import Http, error_body, server_error

FINISHED = ("done", "failed")
_BODY_INDEX = re.compile(r"^body\.structures\.(\d+)(\.|$)")


class RemoteBackend:
    """Submits items in requests of at most ``per_request`` structures and about ``request_bytes`` bytes
    (the server's defaults allow 1000 and 20 MiB). A request the server refuses because of some of its
    structures (422, or 413 for one structure) is sent again without them; those fail with the server's
    error. A request too large as a whole (413) is split in two."""

    poll_s = (0.2, 2.0)  # first and longest wait between two polls without news

    def __init__(self, http: Http, per_request: int = 200, request_bytes: int = 4_000_000):
        self.http, self.per_request, self.request_bytes = http, per_request, request_bytes
        self._batch_of: dict[str, str] = {}  # job id → server batch id
        self._finished_seen: dict[str, int] = {}  # server batch id → finished jobs already collected

    def submit(self, items: list[Item], options: dict) -> list[str | dict]:
        """Per item, its job id, or ``{"status": "failed", "error": …}`` when the server refused it."""
        out: list = [None] * len(items)
        for chunk in self._chunks(items):
            self._post(chunk, items, options, out)
        return out

    def poll(self, job_ids: list[str]) -> dict[str, dict]:
        """The jobs of ``job_ids`` that have finished: ``{job_id: {"status", "result", "error", "cached",
        "job_id"}}``. One status request per server batch; a batch without news costs one small request."""
        pending: dict[str, list[str]] = {}
        for job_id in job_ids:
            pending.setdefault(self._batch_of[job_id], []).append(job_id)
        finished, seen = {}, {}
        for batch_id, ids in pending.items():
            counts = self.http.json("GET", f"/v1/batches/{batch_id}", params={"limit": 1})["counts"]
            n_finished = sum(counts.get(s, 0) for s in FINISHED)
            if n_finished == self._finished_seen.get(batch_id):
                continue
            statuses = self._statuses(batch_id)
            for job_id in ids:
                if statuses.get(job_id) in FINISHED:
                    job = self.http.json("GET", f"/v1/screenings/{job_id}")
                    finished[job_id] = {"status": job["status"], "result": job["result"], "error": job["error"],
                                        "cached": job["cached"], "job_id": job_id}
            seen[batch_id] = n_finished
        self._finished_seen.update(seen)  # only now: a poll cut short by an error is done again in full
        return finished

    def _statuses(self, batch_id: str) -> dict[str, str]:
        out, offset = {}, 0
        while True:
            page = self.http.json("GET", "/v1/screenings", params={"batch_id": batch_id, "limit": 1000, "offset": offset})
            out.update((job["id"], job["status"]) for job in page["items"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return out

    def _chunks(self, items: list[Item]) -> list[list[int]]:
        chunks, size = [[]], 0
        for i, item in enumerate(items):
            n = len(item.content.encode()) + len(item.name) + 100
            if chunks[-1] and (len(chunks[-1]) >= self.per_request or size + n > self.request_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += n
        return [c for c in chunks if c]

    def _post(self, idx: list[int], items: list[Item], options: dict, out: list) -> None:
        body = {"structures": [{"name": items[i].name, "format": items[i].format, "content": items[i].content,
                                "hdos": items[i].hdos} for i in idx], "options": options}
        response = self.http.request("POST", "/v1/screenings", json=body)
        if response.status_code == 202:
            reply = response.json()
            for i, job in zip(idx, reply["jobs"]):
                out[i] = job["id"]
                self._batch_of[job["id"]] = reply["batch_id"]
            return
        if response.status_code in (413, 422):
            body = error_body(response)
            bad = {pos: err for err in body.get("errors") or [body["error"]] for pos in _named(err.get("input"), idx, items)}
            if response.status_code == 413 and not bad and len(idx) == 1:
                bad = {idx[0]: body["error"]}
            if bad:
                for pos, err in bad.items():
                    out[pos] = {"status": "failed", "error": err}
                rest = [i for i in idx if i not in bad]
                if rest:
                    self._post(rest, items, options, out)
                return
            if response.status_code == 413:
                half = len(idx) // 2
                self._post(idx[:half], items, options, out)
                self._post(idx[half:], items, options, out)
                return
        raise server_error(response)


def _named(name: str | None, idx: list[int], items: list[Item]) -> list[int]:
    """The items of this request an error names: by name, or as ``body.structures.K…``."""
    if name is None:
        return []
    match = _BODY_INDEX.match(name)
    if match:
        k = int(match.group(1))
        return [idx[k]] if k < len(idx) else []
    return [i for i in idx if items[i].name == name]
