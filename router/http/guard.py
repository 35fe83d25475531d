"""The HTTP side's guards: read-only methods, a Host header check and the page's security
headers.

The dashboard binds loopback by default, but a browser on the same machine can still be
pointed at it through a hostile name (DNS rebinding): a request whose Host header names
neither loopback nor one of the configured host names is refused with 421 Misdirected
Request. Only GET and HEAD are served; anything else is 405. Every response carries a
Content-Security-Policy that allows exactly what the page loads: its own inline style and
script (by hash, so no other inline code runs) and connections back to its own origin (the
JSON API it polls and the live event stream); nothing else, no framing.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aiohttp.typedefs import Handler

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
READ_METHODS = frozenset({"GET", "HEAD"})
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def _hashes(page: bytes, tag: str) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for kind, body in _INLINE.findall(page)
        if kind.decode() == tag
    ]


def content_security_policy(page: bytes) -> str:
    """The policy for `page`: its inline <style> and <script> blocks by hash, fetch and
    EventSource to its own origin, nothing else."""
    scripts = " ".join(_hashes(page, "script")) or "'none'"
    styles = " ".join(_hashes(page, "style")) or "'none'"
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        f"style-src {styles}; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def host_name(header: str) -> str:
    """The host of a Host header, lower-cased, without its port: "[::1]:8080" -> "::1"."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def install_guards(app: web.Application, page: bytes, allowed_hosts: Iterable[str] = ()) -> None:
    """Put the guards above on `app`; `allowed_hosts` are names (or addresses) it answers
    besides loopback."""
    allowed = {host_name(h) for h in allowed_hosts if h.strip()}
    headers = {
        "Content-Security-Policy": content_security_policy(page),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = host_name(request.headers.get("Host", ""))
        if not (is_loopback(host) or host in allowed):
            raise web.HTTPMisdirectedRequest(
                text=f"host {host or '(none)'!r} is not served here; "
                "add it to SOULSPOT_ROUTER__HTTP_ALLOWED_HOSTS to allow it\n"
            )
        if request.method not in READ_METHODS:
            raise web.HTTPMethodNotAllowed(request.method, sorted(READ_METHODS))
        return await handler(request)

    async def add_headers(_request: web.Request, response: web.StreamResponse) -> None:
        # On every response, streamed (the live events) and refused ones included.
        response.headers.update(headers)

    app.middlewares.append(guard)
    app.on_response_prepare.append(add_headers)
