"""`soulspot events` and `soulspot dlq` against a real bus process."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from cli.commands.dlq import dlq_app
from cli.commands.events import events_app
from cli.console import console
from services.kit.rpc.channel import open_channel
from soulspot.router.v1 import event_bus_pb2_grpc, router_pb2
from tests.helpers.bus import RawSubscriber, completed, envelope

if TYPE_CHECKING:
    from tests.helpers.bus_process import BusProcess

pytestmark = pytest.mark.e2e


async def _seed(address: str) -> None:
    async with open_channel(address) as channel:
        stub = event_bus_pb2_grpc.EventBusServiceStub(channel)
        await stub.Publish(router_pb2.PublishRequest(event=envelope(completed("cli-ok"))))
        async with RawSubscriber(
            stub, "cli-worker", ["download.*", "track.*"], auto_ack=False, max_attempts=1
        ) as sub:
            d = await sub.next()
            sub.nack(d.delivery_id, "cannot handle it")
            for _ in range(100):
                letters = await stub.ListDeadLetters(router_pb2.ListDeadLettersRequest())
                if letters.dead_letters:
                    return
                await asyncio.sleep(0.05)


def test_events_and_dlq_commands(bus_process: BusProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # A wide console, so table cells are not wrapped in the captured output.
    monkeypatch.setattr(console, "width", 300)
    asyncio.run(bus_process.start())
    asyncio.run(_seed(bus_process.address))
    runner = CliRunner()
    router = ["--router", bus_process.address]

    listed = runner.invoke(events_app, ["list", "--type", "download.*", *router])
    assert listed.exit_code == 0, listed.output
    assert "download.completed" in listed.output
    assert "cli-ok" in listed.output

    dlq = runner.invoke(dlq_app, ["list", *router])
    assert dlq.exit_code == 0, dlq.output
    assert "cli-worker" in dlq.output
    assert "max attempts" in dlq.output

    shown = runner.invoke(dlq_app, ["show", "1", *router])
    assert shown.exit_code == 0, shown.output
    assert "cannot handle it" in shown.output
    assert "cli-ok" in shown.output

    missing = runner.invoke(dlq_app, ["show", "999", *router])
    assert missing.exit_code == 1
    assert "NOT_FOUND" in missing.output

    replayed = runner.invoke(dlq_app, ["replay", "--consumer", "cli-worker", *router])
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1" in replayed.output

    unreachable = runner.invoke(events_app, ["list", "--router", "127.0.0.1:1"])
    assert unreachable.exit_code == 1
    assert "unreachable" in unreachable.output


def test_table_commands_print_one_json_document(
    bus_process: BusProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A narrow console: JSON is never wrapped or cut to fit it.
    monkeypatch.setattr(console, "width", 40)
    asyncio.run(bus_process.start())
    asyncio.run(_seed(bus_process.address))
    runner = CliRunner()
    router = ["--router", bus_process.address]

    listed = runner.invoke(events_app, ["list", "--json", *router])
    assert listed.exit_code == 0, listed.output
    events = json.loads(listed.stdout)["events"]
    completed_event = next(e for e in events if e["event_type"] == "download.completed")
    assert completed_event["payload"]["download_id"] == "cli-ok"
    assert isinstance(completed_event["sequence"], int)

    letters = runner.invoke(dlq_app, ["list", "-o", "json", *router])
    assert letters.exit_code == 0, letters.output
    (letter,) = json.loads(letters.stdout)["dead_letters"]
    assert (letter["consumer"], letter["reason"]) == ("cli-worker", "max_attempts")
    assert letter["last_error"] == "cannot handle it"

    shown = runner.invoke(dlq_app, ["show", str(letter["dead_letter_id"]), "--json", *router])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["dead_letter"]["event"]["payload"]["download_id"] == "cli-ok"

    consumers = runner.invoke(events_app, ["consumers", "list", "--json", *router])
    assert consumers.exit_code == 0, consumers.output
    names = [c["name"] for c in json.loads(consumers.stdout)["consumers"]]
    assert "cli-worker" in names

    # Commands that print a result line instead of a table say it as JSON too.
    replayed = runner.invoke(dlq_app, ["replay", "--consumer", "cli-worker", "--json", *router])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout) == {"replayed": 1}
    deleted = runner.invoke(events_app, ["consumers", "delete", "cli-worker", "--json", *router])
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.stdout) == {"consumer": "cli-worker", "deleted": True}
    gone = runner.invoke(events_app, ["consumers", "delete", "cli-worker", "--json", *router])
    assert gone.exit_code == 1
    assert json.loads(gone.stdout) == {"consumer": "cli-worker", "deleted": False}

    # Errors stay on standard error with a non-zero exit, and standard output stays empty.
    missing = runner.invoke(dlq_app, ["show", "999", "--json", *router])
    assert missing.exit_code == 1
    assert missing.stdout == ""
    assert "NOT_FOUND" in missing.stderr
    clash = runner.invoke(events_app, ["list", "--json", "--wide", *router])
    assert clash.exit_code == 2
