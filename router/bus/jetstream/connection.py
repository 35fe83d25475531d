"""Connect to NATS as this process's mesh identity: mutual TLS whenever the process has TLS.

The event store and the pipeline's run store both connect through `connect_nats`. With the
process's transport secure (the router's, set by its entry point), the connection presents the
router's mesh certificate and checks the server's against the mesh CA and the host dialled;
the mesh's NATS nodes (services/kit/security/nats_node.py) take only router identities. Only a
process on a plaintext mesh (SOULSPOT_TLS__PLAINTEXT=true) connects without TLS.

How a connection rides out NATS trouble (the same for both stores):
- The first connection makes one pass over the servers and fails if none answers, so the
  router's start-up (router/bus/jetstream/startup.py) retries under the mesh's backoff and says
  what it waits for; nats-py alone would either give up after about two minutes or, told to
  reconnect forever, never return.
- Once connected, a lost connection is re-established for as long as the process runs (never
  closed for good after nats-py's default sixty tries), every `RECONNECT_WAIT_S`.
- Nothing asked of NATS while disconnected is held back and sent after the reconnection
  (`pending_size=0`: nats-py refuses it at once): a write that failed for its caller, a
  consumer record or a lease renewal, must not land later, when another router may have taken
  the consumer over.
- A server that stops answering without closing the connection (a stalled process, a lost
  network) is noticed within about (`MAX_OUTSTANDING_PINGS` + 1) x `PING_INTERVAL_S` (15 s),
  instead of nats-py's six minutes, and is then re-established like a lost one.
- Every connection made here is followed by `nats_links`: which are down and reconnecting,
  and since when, so the router can say so in its health (router/api/bus_gate.py) while the
  stores ride the outage out. A connection closed on purpose is forgotten, not down.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

import nats

from services.kit.security.tls import Transport, current_transport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from nats.aio.client import Client

_log = logging.getLogger(__name__)

# How often a connected client pings its server, and how many unanswered pings mean it is gone.
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 2
# The wait between reconnection tries of a lost connection (per server).
RECONNECT_WAIT_S = 1.0


class NatsLinks:
    """This process's NATS connections that are down and reconnecting, and since when.

    `connect_nats` reports to the process's one instance, `nats_links`; `listeners` are called
    (no arguments, on the event loop) after each change, and read the state they need."""

    def __init__(self) -> None:
        # connection number -> (its servers, when it went down)
        self._down: dict[int, tuple[tuple[str, ...], float]] = {}
        self._numbers = itertools.count(1)
        self.listeners: list[Callable[[], None]] = []

    def down_since(self, servers: Sequence[str]) -> float | None:
        """When the longest-down connection to any of `servers` went down (time.time()),
        None while every one is up."""
        wanted = set(servers)
        times = [at for (linked, at) in self._down.values() if wanted.intersection(linked)]
        return min(times) if times else None

    def number(self) -> int:
        """A number for a new connection."""
        return next(self._numbers)

    def went_down(self, number: int, servers: Sequence[str]) -> None:
        if number not in self._down:
            self._down[number] = (tuple(servers), time.time())
            self._changed()

    def came_back(self, number: int) -> None:
        """Up again, or closed on purpose: no longer down either way."""
        if self._down.pop(number, None) is not None:
            self._changed()

    def _changed(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # one listener's fault must not stop nats-py's callback
                _log.exception("NATS link listener failed")


nats_links = NatsLinks()


def nats_tls_context(transport: Transport | None) -> ssl.SSLContext | None:
    """A client TLS context presenting `transport`'s certificate and trusting only the mesh
    CA, or None for a plaintext transport (or none)."""
    if transport is None or transport.files is None:
        return None
    files = transport.files
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


async def connect_nats(
    servers: Sequence[str],
    *,
    transport: Transport | None = None,
    **options: Any,
) -> Client:
    """`nats.connect` to `servers` as `transport` (default: this process's), with `options`.

    With TLS the server's certificate is checked against each URL's host: the mesh's NATS
    certificate carries the nodes' names, `localhost` and the loopback addresses. Raises
    (nats-py's NoServersError, the last server's error logged) when no server answers the
    first pass; `max_reconnect_attempts` and `reconnect_time_wait` (default: forever, every
    `RECONNECT_WAIT_S`) apply once connected. See the module's text for the other defaults."""
    context = nats_tls_context(transport if transport is not None else current_transport())
    if context is not None:
        options["tls"] = context
    reconnects = options.pop("max_reconnect_attempts", -1)
    reconnect_wait = options.pop("reconnect_time_wait", RECONNECT_WAIT_S)
    options.setdefault("pending_size", 0)
    options.setdefault("ping_interval", PING_INTERVAL_S)
    options.setdefault("max_outstanding_pings", MAX_OUTSTANDING_PINGS)
    options.setdefault("error_cb", _log_connection_error)
    followed = _follow_link(options, list(servers))
    # nats-py applies one policy to the first connection and to reconnections: a first pass
    # that fails fast (each server tried twice, at once), then the reconnection policy, set
    # on the client's own options once it is connected (nats-py reads them on every try).
    client = await nats.connect(
        servers=list(servers), max_reconnect_attempts=1, reconnect_time_wait=0, **options
    )
    followed.append(client)
    client.options["max_reconnect_attempts"] = reconnects
    client.options["reconnect_time_wait"] = reconnect_wait
    return client


def _follow_link(options: dict[str, Any], servers: list[str]) -> list[Client]:
    """Chain `nats_links`' reports before the caller's own disconnected, reconnected and
    closed callbacks in `options`; the list returned is for the client, once connected."""
    number = nats_links.number()
    disconnected: Callable[[], Awaitable[None]] | None = options.get("disconnected_cb")
    reconnected: Callable[[], Awaitable[None]] | None = options.get("reconnected_cb")
    closed: Callable[[], Awaitable[None]] | None = options.get("closed_cb")
    client: list[Client] = []  # the client, once nats.connect returns it

    async def on_disconnected() -> None:
        # nats-py calls this on a lost connection (reconnecting) and on close() as well (then
        # closed already): only the first is an outage.
        if client and client[0].is_reconnecting:
            nats_links.went_down(number, servers)
        if disconnected is not None:
            await disconnected()

    async def on_reconnected() -> None:
        nats_links.came_back(number)
        if reconnected is not None:
            await reconnected()

    async def on_closed() -> None:
        nats_links.came_back(number)
        if closed is not None:
            await closed()

    options["disconnected_cb"] = on_disconnected
    options["reconnected_cb"] = on_reconnected
    options["closed_cb"] = on_closed
    return client


async def _log_connection_error(err: Exception) -> None:
    # One line per failed try, without nats-py's default traceback for each.
    _log.warning("NATS connection: %s", err or type(err).__name__)


def abort_connection(nc: Client) -> None:
    """Drop the client's socket at once, unflushed: for a close that did not finish in time
    (a server that stopped reading leaves nats-py waiting to flush to it), so no socket is
    left open behind a router that stopped."""
    transport = getattr(nc, "_transport", None)
    for name in ("_io_writer", "_bare_io_writer"):
        writer = getattr(transport, name, None)
        if writer is not None:
            writer.transport.abort()
