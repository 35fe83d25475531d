"""Events the pipeline publishes, through the router's public Publish RPC.

Every event of a run is caused by the run's download.completed: it carries that event's
correlation id, a child of its traceparent, its id as causation and its causation chain plus
one hop. Event ids are derived from the run id and what the event says, so publishing again
after a crash or a retry stores the event once (the bus deduplicates by event_id).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from services.kit.events.client import RouterPublisher, build_envelope

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

    from soulspot.events.v1 import envelope_pb2

SOURCE_MODULE = "router"
_NAMESPACE = uuid.UUID("8f0b5f43-5a8e-4f55-9d55-7b6a2c1f0e11")


def derived_event_id(run_id: str, *parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join((run_id, *parts))))


class RunPublisher:
    """Publishes a run's events; transient failures are retried within `deadline_s`."""

    def __init__(self, channel: grpc.aio.Channel, *, deadline_s: float = 10.0) -> None:
        self._publisher = RouterPublisher(
            channel, source_module=SOURCE_MODULE, deadline_s=deadline_s
        )

    async def publish(
        self,
        payload: Message,
        *,
        event_id: str,
        cause: envelope_pb2.EventEnvelope,
        subject: str = "",
    ) -> envelope_pb2.EventEnvelope:
        envelope = build_envelope(
            payload,
            source_module=SOURCE_MODULE,
            subject=subject,
            ordering_key=subject,
            cause=cause,
        )
        envelope.event_id = event_id
        return await self._publisher.publish_envelope(envelope)
