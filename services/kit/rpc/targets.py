"""Turns a router address setting, one `host:port` or several comma-separated, into the gRPC
target and channel options that reach them.

One address is used as given. Several become one channel over all of them: a static
`ipv4:`/`ipv6:` address list under gRPC's own round_robin, so calls spread over the routers
that are up and keep going when one dies (round_robin picks only connected ones). Host names
are resolved when the channel is opened; a name that does not resolve then (a router that is
down and whose name went with it) is left out, and the channel never learns of it. Code on an
event loop resolves with `resolve_channel_target`, whose lookups run in the loop's executor;
`channel_target` looks up in the calling thread, for callers with no loop to keep going.

With TLS, the server's certificate is checked against the first address's host (`localhost`
for a loopback address): every router presents the router's certificate, whose names cover
loopback and every router's service name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass

_log = logging.getLogger("soulspot.channel")

ROUND_ROBIN = "round_robin"


def split_addresses(address: str) -> list[str]:
    """The `host:port` entries of a comma-separated address setting, blanks dropped."""
    return [part.strip() for part in address.split(",") if part.strip()]


def _host_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):  # [v6]:port
        host, _, port = entry[1:].partition("]:")
        return host, port
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"router address {entry!r} is not host:port")
    return host, port


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# What getaddrinfo answers: (family, type, proto, canonname, sockaddr).
AddressInfo = tuple[object, object, object, object, tuple[object, ...]]


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _distinct(infos: list[AddressInfo]) -> list[Address]:
    found: list[Address] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]))
        if ip not in found:
            found.append(ip)
    return found


def _left_out(host: str, port: str, err: OSError) -> list[Address]:
    _log.warning("router address %s:%s left out: %s", host, port, err)
    return []


def _resolve(host: str, port: str) -> list[Address]:
    if (ip := _literal(host)) is not None:
        return [ip]
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as err:
        return _left_out(host, port, err)
    return _distinct(list(infos))


async def _resolve_on_loop(host: str, port: str) -> list[Address]:
    if (ip := _literal(host)) is not None:
        return [ip]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM
        )
    except OSError as err:
        return _left_out(host, port, err)
    return _distinct(list(infos))


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    target: str
    options: tuple[tuple[str, str], ...] = ()


def channel_target(address: str) -> ChannelTarget:
    """The target and options for `address`: itself for one address, a round_robin list over
    every resolved address for several. Looks names up in this thread: on an event loop, use
    `resolve_channel_target`."""
    entries = split_addresses(address)
    if len(entries) <= 1:
        return ChannelTarget(entries[0] if entries else address)
    return _round_robin(entries, [_resolve(*_host_port(entry)) for entry in entries])


async def resolve_channel_target(address: str) -> ChannelTarget:
    """`channel_target`, with the names looked up in the running loop's executor (all at
    once), so the loop keeps serving while a resolver is slow."""
    entries = split_addresses(address)
    if len(entries) <= 1:
        return ChannelTarget(entries[0] if entries else address)
    hosts = [_host_port(entry) for entry in entries]
    resolved = await asyncio.gather(*(_resolve_on_loop(host, port) for host, port in hosts))
    return _round_robin(entries, list(resolved))


def _round_robin(entries: list[str], resolved: list[list[Address]]) -> ChannelTarget:
    """The round_robin target over the addresses each entry resolved to."""
    v4: list[str] = []
    v6: list[str] = []
    for entry, ips in zip(entries, resolved, strict=True):
        port = _host_port(entry)[1]
        for ip in ips:
            (v4 if ip.version == 4 else v6).append(
                f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"
            )
    # One scheme per target: the family most addresses resolved to (IPv4 on a tie).
    chosen, scheme = (v4, "ipv4") if len(v4) >= len(v6) else (v6, "ipv6")
    first_host = _host_port(entries[0])[0]
    first_ip = _literal(first_host)
    check_name = "localhost" if first_ip is not None and first_ip.is_loopback else first_host
    if not chosen:
        # Nothing resolves now: the first address as given, so gRPC's resolver keeps trying.
        return ChannelTarget(entries[0])
    return ChannelTarget(
        f"{scheme}:{','.join(chosen)}",
        (
            ("grpc.lb_policy_name", ROUND_ROBIN),
            ("grpc.ssl_target_name_override", check_name),
            ("grpc.default_authority", check_name),
        ),
    )
