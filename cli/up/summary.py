"""What `soulspot up` prints once the stack is up: each service with its address, status and
reason (as the router sees the modules), and where the router, dashboard, state and logs are."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.table import Table

from cli.up.logs import logged_reason
from cli.up.plan import router_http_address

if TYPE_CHECKING:
    from rich.console import Console

    from cli.up.plan import StackPlan
    from cli.up.runner import Running

# How long to wait for started modules to show up in the router's status (registration is
# asynchronous to the module's own health).
REGISTRATION_WAIT_S = 10.0

_STATUS_NAMES = {0: "unknown", 1: "active", 2: "inactive", 3: "degraded", 4: "unknown"}


@dataclass
class ModuleView:
    status: str
    reason: str = ""
    address: str = ""


async def router_view(
    plan: StackPlan, running: list[Running], console: Console
) -> dict[str, ModuleView] | None:
    """Each module's status and reason as the router sees them, None without a router."""
    router = plan.router
    if router is None or router.address is None:
        return None
    from services.kit.rpc.channel import open_channel
    from soulspot.router.v1 import router_pb2, status_pb2_grpc

    expected = {p.spec.name for p in running if not p.spec.is_router}
    deadline = time.monotonic() + REGISTRATION_WAIT_S
    view: dict[str, ModuleView] | None = None
    async with open_channel(router.address) as channel:
        stub = status_pb2_grpc.StatusServiceStub(channel)
        while True:
            try:
                reply = await stub.GetStatus(router_pb2.GetStatusRequest(), timeout=2.0)
            except Exception as err:  # any RPC failure: show the table without it
                console.print(f"[yellow]router status unavailable:[/] {err}")
                return view
            view = {
                m.name: ModuleView(_STATUS_NAMES.get(m.status, "unknown"), m.reason, m.address)
                for m in reply.modules
            }
            settled = all(name in view and view[name].status != "unknown" for name in expected)
            if settled or time.monotonic() > deadline:
                return view
            await asyncio.sleep(0.25)


def services_table(running: list[Running], view: dict[str, ModuleView] | None) -> Table:
    table = Table(title="SoulSpot mesh", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("address", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason")
    for proc in running:
        spec = proc.spec
        status, reason = _own_status(proc)
        if view is not None and not spec.is_router:
            seen = view.get(spec.name)
            if seen is None:
                status, reason = "unregistered", "not (yet) registered with the router"
            else:
                status, reason = seen.status, seen.reason
                if status != "active":
                    # grpc.health carries no reason, so the router's is generic; the
                    # module logged its own.
                    reason = logged_reason(proc.log_path) or reason
        style = {"active": "green", "serving": "green"}.get(status, "yellow")
        table.add_row(spec.name, spec.address or "-", f"[{style}]{status}[/]", reason)
    return table


def print_summary(
    plan: StackPlan,
    running: list[Running],
    view: dict[str, ModuleView] | None,
    console: Console,
) -> None:
    console.print(services_table(running, view))
    router = plan.router
    if router is not None and router.address:
        console.print(f"router     {router.address}   (SOULSPOT_ROUTER_ADDRESS)")
    http = router_http_address(plan)
    if http:
        console.print(f"dashboard  http://{http}")
    console.print(f"state      {plan.state_dir}")
    console.print(f"logs       {plan.state_dir / 'logs'}/<service>.log")
    console.print("Ctrl-C stops everything.")


def _own_status(proc: Running) -> tuple[str, str]:
    if proc.exited:
        return "exited", f"code {proc.popen.returncode}"
    if proc.health is None:
        return "running", ""
    if proc.health.serving:
        return "serving", ""
    return (proc.health.status or "no answer").lower(), proc.health.error
