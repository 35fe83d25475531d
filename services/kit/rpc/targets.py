"""Turns a router address setting, one `host:port` or several comma-separated, into the gRPC
target and channel options that reach them.

One address is used as given. Several become one channel over all of them: a static
`ipv4:`/`ipv6:` address list under gRPC's own round_robin, so calls spread over the routers
that are up and keep going when one dies (round_robin picks only connected ones). Host names
are resolved when the channel is opened; a name that does not resolve then (a router that is
down and whose name went with it) is left out, and the channel never learns of it.

With TLS, the server's certificate is checked against the first address's host (`localhost`
for a loopback address): every router presents the router's certificate, whose names cover
loopback and every router's service name.
"""

from __future__ import annotations

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


def _resolve(host: str, port: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as err:
        _log.warning("router address %s:%s left out: %s", host, port, err)
        return []
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip not in found:
            found.append(ip)
    return found


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    target: str
    options: tuple[tuple[str, str], ...] = ()


def channel_target(address: str) -> ChannelTarget:
    """The target and options for `address`: itself for one address, a round_robin list over
    every resolved address for several."""
    entries = split_addresses(address)
    if len(entries) <= 1:
        return ChannelTarget(entries[0] if entries else address)
    v4: list[str] = []
    v6: list[str] = []
    for entry in entries:
        host, port = _host_port(entry)
        for ip in _resolve(host, port):
            (v4 if ip.version == 4 else v6).append(
                f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"
            )
    # One scheme per target: the family most addresses resolved to (IPv4 on a tie).
    chosen, scheme = (v4, "ipv4") if len(v4) >= len(v6) else (v6, "ipv6")
    first_host = _host_port(entries[0])[0]
    try:
        check_name = "localhost" if ipaddress.ip_address(first_host).is_loopback else first_host
    except ValueError:
        check_name = first_host
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
