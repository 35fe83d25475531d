"""The router's HTTP side: dashboard, JSON API, live events and /metrics (see app.py)."""

from __future__ import annotations

from router.http.app import (
    DEFAULT_HTTP_ADDRESS,
    create_http_app,
    http_address,
    start_http,
    start_router_http,
)

__all__ = [
    "DEFAULT_HTTP_ADDRESS",
    "create_http_app",
    "http_address",
    "start_http",
    "start_router_http",
]
