"""Prometheus metrics (text exposition format) from :mod:`mads.core.telemetry`, for authenticated scrapers."""

from __future__ import annotations

import inspect

from aiohttp import web

from gateway.errors import ApiError

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    try:
        from mads.core.telemetry import prometheus_text
    except ImportError:
        raise ApiError(503, "metrics_unavailable", "metrics are not available in this build") from None
    text = prometheus_text()
    if inspect.isawaitable(text):
        text = await text
    return web.Response(body=str(text).encode("utf-8"), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
