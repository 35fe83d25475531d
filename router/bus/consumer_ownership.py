"""What the bus asks of a store whose consumers are served by one router at a time.

A store shared by several routers (JetStream) hands each durable consumer to one router
through a lease (router/bus/jetstream/consumer_lease.py); the bus claims it before serving a
subscriber, and gives it up when the consumer's last subscriber here goes. A store of one
router (SQLite) has no such methods, and the bus serves every consumer itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class Holder:
    """The router that serves a consumer, as its lease names it."""

    owner: str
    address: str = ""

    def describe(self) -> str:
        return f"router {self.owner}" + (f" at {self.address}" if self.address else "")

    def name(self) -> str:
        """How status names it: its address (the router's `answered_by` there) when the
        lease carries one, else its owner name."""
        return self.address or self.owner


@runtime_checkable
class ConsumerOwnership(Protocol):
    """A store whose consumers are served by one router at a time."""

    # Told the name of a consumer whose lease this router lost (another router took it
    # over): the bus stops serving it at once.
    on_consumer_lost: Callable[[str], None] | None
    # How this router is named in its leases: status's `answered_by` (host:port), set by the
    # router once its port is bound.
    served_as: str

    async def claim_consumer(self, name: str) -> Holder | None:
        """Serve `name` here: None once this router holds it (its record read afresh), else
        the router that does."""

    async def release_consumer(self, name: str) -> None:
        """Write the consumer's state and give it up, for any router to claim."""
