"""Prometheus metrics: HTTP requests of this API process, and jobs by status from the store (so the
numbers cover every worker, embedded or Celery)."""
from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry()
REQUESTS = Counter("elfscreen_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("elfscreen_http_request_seconds", "HTTP request latency (s)", ["route"], registry=REGISTRY)
STRUCTURES = Counter("elfscreen_structures_submitted", "structures accepted", registry=REGISTRY)
CACHE_HITS = Counter("elfscreen_cache_hits", "structures answered from the cache at submission", registry=REGISTRY)


class _StoreCollector:
    """Jobs by status, read from the store at each scrape."""

    store = None

    def collect(self):
        g = GaugeMetricFamily("elfscreen_jobs", "jobs in the store by status", labels=["status"])
        if self.store is not None:
            for status, n in self.store.counts().items():
                g.add_metric([status], n)
        yield g


_COLLECTOR = _StoreCollector()
REGISTRY.register(_COLLECTOR)


async def count_requests(request: Request, call_next):
    start = time.perf_counter()
    response = await call_next(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    LATENCY.labels(route).observe(time.perf_counter() - start)
    return response


def submitted(n: int, cached: int) -> None:
    STRUCTURES.inc(n)
    CACHE_HITS.inc(cached)


def render(store) -> Response:
    _COLLECTOR.store = store
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
