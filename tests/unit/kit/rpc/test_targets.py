"""Router address lists: one address as given; several as a round_robin list over every
resolved address, checked against the first address's name; a name that does not resolve is
left out; on an event loop, names are looked up without holding the loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from services.kit.rpc.targets import channel_target, resolve_channel_target, split_addresses
from services.kit.support.settings import KitSettings


def test_one_address_is_used_as_given() -> None:
    assert channel_target("router:50051").target == "router:50051"
    assert channel_target("router:50051").options == ()
    assert channel_target("unix:/run/router.sock").target == "unix:/run/router.sock"


def test_several_loopback_addresses_become_a_round_robin_list() -> None:
    target = channel_target("127.0.0.1:50051, 127.0.0.1:50052")
    assert target.target == "ipv4:127.0.0.1:50051,127.0.0.1:50052"
    options = dict(target.options)
    assert options["grpc.lb_policy_name"] == "round_robin"
    # Router certificates carry `localhost`; the list itself is no host name.
    assert options["grpc.ssl_target_name_override"] == "localhost"


def test_host_names_are_resolved_and_the_first_names_the_certificate_check() -> None:
    target = channel_target("localhost:50051,127.0.0.2:50052")
    assert target.target.startswith("ipv4:")
    assert "127.0.0.1:50051" in target.target
    assert target.target.endswith("127.0.0.2:50052")
    assert dict(target.options)["grpc.ssl_target_name_override"] == "localhost"


async def test_on_the_loop_a_name_resolves_as_in_a_thread() -> None:
    address = "localhost:50051,127.0.0.2:50052,no-such-router.invalid:50053"
    assert await resolve_channel_target(address) == channel_target(address)
    assert await resolve_channel_target("router:50051") == channel_target("router:50051")


async def test_on_the_loop_a_slow_lookup_leaves_the_loop_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lookup answers only once a coroutine on the loop has run: a lookup that held the
    # loop would wait out the deadline and find the flag unset.
    loop_ran = threading.Event()
    answered_after_loop_ran: list[bool] = []
    real = socket.getaddrinfo

    def slow_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "router-b.test":
            answered_after_loop_ran.append(loop_ran.wait(timeout=10))
            host = "127.0.0.2"
        return real(host, *args, **kwargs)

    async def mark() -> None:
        loop_ran.set()

    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    marker = asyncio.create_task(mark())
    target = await resolve_channel_target("127.0.0.1:50051,router-b.test:50052")
    await marker
    assert answered_after_loop_ran == [True]
    assert target.target == "ipv4:127.0.0.1:50051,127.0.0.2:50052"


def test_a_name_that_does_not_resolve_is_left_out() -> None:
    target = channel_target("127.0.0.1:50051,no-such-router.invalid:50052")
    assert target.target == "ipv4:127.0.0.1:50051"


def test_nothing_resolves_keeps_the_first_address_for_grpcs_own_resolver() -> None:
    target = channel_target("no-such-a.invalid:1,no-such-b.invalid:2")
    assert target.target == "no-such-a.invalid:1"


def test_ipv6_addresses_keep_their_brackets() -> None:
    target = channel_target("[::1]:50051,[::1]:50052")
    assert target.target == "ipv6:[::1]:50051,[::1]:50052"


def test_split_drops_blanks() -> None:
    assert split_addresses(" a:1, ,b:2 ,") == ["a:1", "b:2"]


def test_the_setting_takes_a_list_and_refuses_an_entry_without_a_port() -> None:
    assert KitSettings(router_address="a:1, b:2").router_address == "a:1,b:2"
    with pytest.raises(ValueError, match="'b' is not host:port"):
        KitSettings(router_address="a:1,b")
    with pytest.raises(ValueError, match="at most 8 router addresses"):
        KitSettings(router_address=",".join(f"r{i}:1" for i in range(9)))
