"""Publishing that survives an unreachable router: an event is held and retried, not lost."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from services.kit.events.client import EventPublisher, build_envelope
from services.kit.rpc.errors import status_code_of
from services.kit.rpc.policy import SAME_REQUEST_RETRYABLE_CODES
from services.kit.support.backoff import Backoff, BackoffPolicy

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from soulspot.events.v1 import envelope_pb2

__all__ = ["RetryingPublisher"]

log = logging.getLogger("soulspot.module")


class RetryingPublisher:
    """Wraps a publisher so an event is not lost while the router is unreachable.

    Transient failures (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, connection errors) are
    retried with the kit's backoff (equal jitter, capped at `max_backoff_s`) until they
    succeed or the module shuts down. One warning is logged when publishing starts failing
    and one info when it recovers, not one per attempt. Non-transient errors (a contract
    violation: INVALID_ARGUMENT) are raised.
    """

    def __init__(self, inner: EventPublisher, *, max_backoff_s: float = 10.0) -> None:
        self.inner = inner
        self.max_backoff_s = max_backoff_s
        self._failing = False
        self._closed = asyncio.Event()
        self.pending = 0

    def close(self) -> None:
        """Stop retrying: a pending publish raises instead of waiting for a router."""
        self._closed.set()

    def __getattr__(self, name: str) -> Any:
        # InMemoryBus extras (.published, .payloads) stay reachable through the wrapper.
        return getattr(self.inner, name)

    async def publish(
        self,
        payload: Message,
        *,
        subject: str = "",
        ordering_key: str = "",
        attributes: dict[str, str] | None = None,
    ) -> envelope_pb2.EventEnvelope:
        # Built once, so every retry carries the same event_id and the router stores the
        # event once even when an answer was lost.
        envelope = build_envelope(
            payload,
            source_module=getattr(self.inner, "source_module", ""),
            subject=subject,
            ordering_key=ordering_key,
            attributes=attributes,
        )
        return await self.publish_envelope(envelope)

    async def publish_envelope(
        self, envelope: envelope_pb2.EventEnvelope
    ) -> envelope_pb2.EventEnvelope:
        # Equal jitter, uniform(d/2, d), d from 0.1 s doubling up to max_backoff_s.
        first_s = min(0.1, self.max_backoff_s)
        backoff = Backoff(
            BackoffPolicy(initial_s=first_s, cap_s=self.max_backoff_s, jitter="equal")
        )
        self.pending += 1
        try:
            while True:
                try:
                    stored = await self.inner.publish_envelope(envelope)
                except Exception as err:
                    if not _retryable(err) or self._closed.is_set():
                        log.error(
                            "event not published",
                            extra={
                                "event_type": envelope.event_type,
                                "event_id": envelope.event_id,
                                "error": str(err),
                            },
                        )
                        raise
                    if not self._failing:
                        self._failing = True
                        log.warning(
                            "router unreachable: holding events and retrying until it answers",
                            extra={
                                "event_type": envelope.event_type,
                                "error": str(err),
                                "action": "retrying with backoff",
                            },
                        )
                    # close() cuts the wait short, so shutdown does not sit out a backoff.
                    await backoff.wait(interrupt=self._closed)
                    continue
                if self._failing:
                    self._failing = False
                    log.info("router reachable again: held events are being published")
                return stored
        finally:
            self.pending -= 1


def _retryable(err: BaseException) -> bool:
    # A deadline on a publish means the router did not answer in time, not that the event
    # is wrong: the same event_id makes a second copy harmless, so it is retried too.
    return status_code_of(err) in SAME_REQUEST_RETRYABLE_CODES or isinstance(err, OSError)
