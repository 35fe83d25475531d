"""Consumer leases: which router serves each durable consumer, when several share JetStream.

A durable consumer's delivery state (position, attempts, what is unacked) is JetStream's, and
JetStream alone would let several routers pull from it. But ordering keys (one event of a key
in flight), competing subscribers sharing the consumer and each Subscribe stream's in-flight
bounds need one dispatcher that sees every delivery of the consumer; two routers serving it
at once would each hand out events the other cannot see. So one router at a time holds the
consumer's lease, a key of the KV bucket `<stream>_CONSUMER_LEASES` (one key per consumer,
its value the holder's owner name):

- claim: KV create (create-if-absent); of routers claiming at once, exactly one wins.
- renew: every `lease_s / 3`, a compare-and-set on the revision this router last wrote
  (then `on_renewed` is told the consumers held: the router reads the info of those of its
  JetStream consumers that have no pull out, one request each, and so notices one deleted
  through another router while its subscribers are saturated). A
  refused renewal (the key moved or went: another router took the consumer over) or no
  successful renewal for a whole `lease_s` (NATS out of reach: another router may take it
  now) means the lease is lost: `on_lost` is told, and the router stops serving the
  consumer at once.
- takeover: a router asked for a consumer another holds remembers the lease's revision and
  when it first saw it, on its own clock; once that revision has stood still for `lease_s`,
  the holder is dead (kill -9, a host gone) and the lease is taken by compare-and-set on
  that revision, so one router wins. No clocks are compared across hosts, as with the
  pipeline's router leases (router/pipeline/kv_store.py). Time this router could not reach
  NATS (a failed or slow renewal, a failed read while claiming) does not count: it is
  "blind" then, and once it reads again every lease it saw starts standing still anew, so
  an outage longer than a lease does not make it take over from a live holder.
- release: a compare-and-set delete, when the consumer's last subscriber on this router goes
  and when the router stops (after its record, owner and idle timer, is written; what it
  held unacked is nakked back to JetStream): another router may claim it now.

Why a router that does not hold the lease refuses the Subscribe (UNAVAILABLE, naming the
holder) rather than forwarding the stream to it: the kit's subscriber already reconnects on
UNAVAILABLE, and over several routers its round-robin channel puts the next try on another
router, so the client needs nothing new; forwarding would add a router-to-router hop on every
delivery and ack, a second place where callers' identities are vouched for, and a stream
that breaks when either router goes. The cost: a client given one router's address only,
while another router holds its consumer, waits until that router lets go.

Limits: a router that stalls (not dies) for longer than a lease, and comes back, may pull,
dispatch and ack once more, and write its consumer record, before its next renewal tells it
the lease is gone; for that while two dispatchers serve the consumer, so ordering keys and
in-flight bounds may be exceeded, while JetStream still counts the acks and attempts, and
deliveries are at least once whichever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from router.bus.consumer_ownership import Holder
from router.bus.jetstream.records import consumer_token
from services.kit.support.tasks import cancel_within

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from nats.js.kv import KeyValue

_log = logging.getLogger(__name__)


def new_owner_id() -> str:
    """This process's owner name: host, pid and a random part (a restart is a new owner)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _encode(owner: str, address: str) -> bytes:
    return json.dumps({"owner": owner, "address": address}).encode()


def _decode(value: bytes | None) -> Holder:
    try:
        raw = json.loads(value or b"{}")
        return Holder(str(raw.get("owner", "")), str(raw.get("address", "")))
    except ValueError:
        return Holder("")


class ConsumerLeases:
    """The consumer leases this router holds, renewed in the background (see the module)."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        lease_s: float,
        owner: str | None = None,
        address: str = "",
        on_lost: Callable[[str], None] | None = None,
        on_renewed: Callable[[Sequence[str]], Awaitable[Any]] | None = None,
    ) -> None:
        self.kv = kv
        self.lease_s = lease_s
        self.owner = owner or new_owner_id()
        # Where this router is reached, for the message another router gives a subscriber.
        self.address = address
        self.on_lost = on_lost
        # Told the consumers held after each renewal round (outside the lock: claims wait
        # for nothing it does).
        self.on_renewed = on_renewed
        # consumer -> (revision this router last wrote, when it last renewed, monotonic).
        self._held: dict[str, tuple[int, float]] = {}
        # consumer -> (another router's lease revision, when this router first saw it).
        self._seen: dict[str, tuple[int, float]] = {}
        # Set when this router could not reach NATS (a failed or slow renewal, a failed read
        # while claiming): time it could not watch the leases does not count as another
        # router's lease standing still.
        self._blind = False
        self._task: asyncio.Task[None] | None = None
        # Claims, renewals and releases one at a time: a release never races a renewal
        # that would leave the key at a revision nobody renews.
        self._lock = asyncio.Lock()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="consumer-leases"
            )

    async def close(self) -> None:
        """Stop renewing and give every lease up (the consumers' state is written by now)."""
        task, self._task = self._task, None
        # Asked again if a renewal's request lost the cancellation (see cancel_within).
        if not await cancel_within(task, self.lease_s):
            _log.warning("consumer lease renewals did not stop within %gs", self.lease_s)
        for name in list(self._held):
            await self.release(name)

    def holds(self, name: str) -> bool:
        return name in self._held

    @property
    def held(self) -> list[str]:
        return list(self._held)

    async def is_held(self, name: str) -> bool:
        """Whether some router (this one or another) holds the consumer's lease now."""
        if name in self._held:
            return True
        try:
            await self.kv.get(consumer_token(name))
        except KeyNotFoundError:
            return False
        return True

    async def holder(self, name: str) -> Holder | None:
        """The router that holds the consumer's lease now (None: nobody)."""
        if name in self._held:
            return Holder(self.owner, self.address)
        try:
            entry = await self.kv.get(consumer_token(name))
        except KeyNotFoundError:
            return None
        return _decode(entry.value)

    def _value(self) -> bytes:
        return _encode(self.owner, self.address)

    async def claim(self, name: str) -> Holder | None:
        """Take the consumer's lease: None once this router holds it, else the holder."""
        async with self._lock:
            return await self._claim(name)

    async def _claim(self, name: str) -> Holder | None:
        if name in self._held:
            return None
        key = consumer_token(name)
        for _ in range(3):  # a lease released between the create and the read: again
            try:
                revision = await self.kv.create(key, self._value())
            except KeyWrongLastSequenceError:
                pass
            except Exception:
                self._blind = True
                raise
            else:
                self._took(name, revision)
                return None
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                continue
            except Exception:
                self._blind = True
                raise
            assert entry.revision is not None
            holder = _decode(entry.value)
            now = time.monotonic()
            if self._blind:
                # NATS answers again: what this router saw stood still only as far as it
                # could tell; every lease seen starts standing still from now.
                self._blind = False
                self._seen = {n: (rev, now) for n, (rev, _) in self._seen.items()}
            seen = self._seen.get(name)
            if seen is None or seen[0] != entry.revision:
                self._seen[name] = (entry.revision, now)
                return holder
            if now - seen[1] < self.lease_s:
                return holder
            try:
                revision = await self.kv.update(key, self._value(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # renewed or taken meanwhile: look again
            _log.warning(
                "took over consumer %s from %s, whose lease stood still for %gs",
                name,
                holder.describe(),
                self.lease_s,
                extra={"consumer": name, "owner": holder.owner},
            )
            self._took(name, revision)
            return None
        return Holder("another router (the lease keeps changing hands)")

    def _took(self, name: str, revision: int) -> None:
        self._held[name] = (revision, time.monotonic())
        self._seen.pop(name, None)

    async def release(self, name: str) -> None:
        async with self._lock:
            await self._release(name)

    async def _release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        try:
            await self.kv.delete(consumer_token(name), last=held[0])
        except KeyWrongLastSequenceError:
            pass  # taken over meanwhile: not ours to delete
        except Exception as err:  # NATS away: the lease goes stale instead
            _log.warning("could not release the lease of consumer %s: %s", name, err)

    def _lost(self, name: str, why: str) -> None:
        if self._held.pop(name, None) is None:
            return
        _log.warning(
            "lost the lease of consumer %s (%s): no longer serving it here",
            name,
            why,
            extra={"consumer": name},
        )
        if self.on_lost is not None:
            self.on_lost(name)

    async def renew(self) -> None:
        """One renewal round over every lease held."""
        async with self._lock:
            for name in list(self._held):
                await self._renew_one(name)

    async def _renew_one(self, name: str) -> None:
        revision, renewed_at = self._held[name]
        began = time.monotonic()
        try:
            new_revision = await self.kv.update(consumer_token(name), self._value(), last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            self._lost(name, "another router took it over")
        except Exception as err:
            self._blind = True
            if time.monotonic() - renewed_at >= self.lease_s:
                self._lost(name, f"not renewed for a whole lease: {err}")
        else:
            now = time.monotonic()
            if now - began > self.lease_s / 3:
                # Answered, but slowly: NATS was as good as out of reach meanwhile.
                self._blind = True
            self._held[name] = (new_revision, now)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception:
                _log.exception("renewing consumer leases failed")
            if self.on_renewed is not None and self._held:
                try:
                    await self.on_renewed(list(self._held))
                except Exception:
                    _log.exception("looking at the consumers served here failed")
