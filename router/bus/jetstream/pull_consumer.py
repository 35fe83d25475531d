"""A durable bus consumer's JetStream side: its durable pull consumer on the log stream.

JetStream holds the consumer's delivery state: its position (the ack floor), which events
were delivered and how often (`num_delivered`), what is unacked (up to `max_ack_pending`),
and when an unacked event goes out again (`ack_wait`). The router pulls from it, settles each
message it pulled (ack, nak with a delay, in-progress, term) and keeps nothing of that in its
own records.

Names and filters:
- The durable name is the bus name's token (records.consumer_token: "c" and URL-safe base64,
  which holds none of `.`, `*`, `>` or whitespace, and reads back with consumer_from_token);
  the bus name and patterns are also in the consumer's `metadata` for people reading
  `nats consumer info`.
- The bus's patterns become filter subjects of the stream (`<stream>.<event_type>`): `*` is
  NATS's `*`, a trailing `**` is `>`, and a lone `*`/`**` or no pattern is `<stream>.>`. A
  pattern NATS cannot say (`**` before the last token), or patterns whose subjects overlap
  (JetStream refuses overlapping filters), take the broad filter `<stream>.>`: the router
  checks every pulled event against the patterns anyway and acks one that does not match at
  once, without a delivery.

Looking at the consumer (a consumer-info request) is not part of pulling: an idle consumer
costs one pull request per PULL_WAIT_S and nothing more. A consumer deleted (through another
router) while a pull is out ends it with 409 "Consumer Deleted", and a pull sent after that
finds nobody to answer (503): either makes the router look at the consumer and find it
gone. On each lease renewal tick (`PullConsumers.look`) the router also looks at each
consumer it serves that has no pull out (its subscribers saturated: a deletion then ends no
pull), and at one whose position JetStream must tell (`wants_info`: a previous holder left
events unacked); the info's numbers go to `on_info`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from nats.js import api
from nats.js.errors import NotFoundError

from router.bus.jetstream.records import consumer_token
from router.bus.jetstream.reply_writer import send_replies
from services.kit.support.backoff import BackoffPolicy
from services.kit.support.tasks import cancel_within

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

_log = logging.getLogger(__name__)

ACK = b"+ACK"
NAK = b"-NAK"
IN_PROGRESS = b"+WPI"
TERM = b"+TERM"
# The consumer's metadata keys (server >= 2.10): for people and for other routers' status.
META_NAME = "soulspot-consumer"
META_PATTERNS = "soulspot-patterns"


def delivery_of(reply: str) -> tuple[int, int, int]:
    """A pulled message's (stream sequence, deliveries so far, matching events not yet
    delivered), read from its reply subject. nats-py's `Msg.metadata` reads the same and
    builds dataclasses and a datetime on top: this runs for every event and every consumer.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or with
    `<domain>.<account hash>` before the stream and a random token at the end; stream and
    consumer names hold no dots."""
    tokens = reply.split(".")
    at = 4 if len(tokens) == 9 else 6
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream message's reply subject: {reply!r}")
    return int(tokens[at + 1]), int(tokens[at]), int(tokens[at + 4])


def durable_name(consumer: str) -> str:
    """The JetStream durable name of a bus consumer (reversible: consumer_from_token)."""
    return consumer_token(consumer)


def _subject(stream: str, pattern: str) -> str | None:
    """The filter subject of one pattern, or None when NATS cannot express it."""
    if pattern in ("*", "**"):
        return f"{stream}.>"
    tokens = pattern.split(".")
    if "**" in tokens[:-1]:
        return None
    if tokens[-1] == "**":
        tokens[-1] = ">"
    return ".".join([stream, *tokens])


def _overlap(a: str, b: str) -> bool:
    """Whether some subject matches both filters."""
    ta, tb = a.split("."), b.split(".")
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
        if i == min(len(ta), len(tb)) - 1:
            return len(ta) == len(tb)
    return False


def filter_subjects(stream: str, patterns: Sequence[str]) -> list[str]:
    """The consumer's filter subjects for the bus's patterns (see the module's text)."""
    broad = [f"{stream}.>"]
    subjects: list[str] = []
    for pattern in patterns:
        subject = _subject(stream, pattern)
        if subject is None or subject == broad[0]:
            return broad
        if subject not in subjects:
            subjects.append(subject)
    if not subjects:
        return broad
    for i, a in enumerate(subjects):
        if any(_overlap(a, b) for b in subjects[i + 1 :]):
            return broad
    return subjects


class PullConsumer:
    """One bus consumer's JetStream durable pull consumer: created or updated, pulled in
    the background while the router wants events, and settled message by message."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        stream: str,
        name: str,
        ack_wait_s: float,
        pull_wait_s: float,
        on_gone: Callable[[str], None] | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        self.name = name
        self.durable = durable_name(name)
        self.ack_wait_s = ack_wait_s
        self.pull_wait_s = pull_wait_s
        # Told once the JetStream consumer is gone (deleted through another router).
        self.on_gone = on_gone
        # Told the consumer's info whenever the router reads it, and asked on each tick
        # whether it needs it even while pulling (see `look`).
        self.on_info: Callable[[api.ConsumerInfo], None] | None = None
        self.wants_info: Callable[[], bool] | None = None
        self._pulling = False  # a pull request is out (or about to go)
        self._gone_told = False
        self._sub: Any = None
        self._inbox = ""
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.durable}"
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._arrived: Callable[[Msg], None] | None = None
        # The pull request out now: how many it asked, how many came, and whether it ended
        # (all came, or the server's status ended it: expired, no messages, deleted).
        self._asked = 0
        self._got = 0
        self._ended = asyncio.Event()
        self._status = ""
        # Settlements not yet sent (publishes to the messages' reply subjects), in order.
        self._settle: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.patterns: tuple[str, ...] = ()
        self.max_deliver = 0

    # -- the JetStream consumer ------------------------------------------------------------

    def _config(self, patterns: Sequence[str], max_attempts: int, page_size: int) -> dict[str, Any]:
        subjects = filter_subjects(self.stream, patterns)
        return {
            "filter_subject": subjects[0] if len(subjects) == 1 else None,
            "filter_subjects": subjects if len(subjects) > 1 else None,
            # The last attempt's failure is parked by the router; one more delivery lets a
            # router that takes over park an event whose router died after its last try.
            "max_deliver": max_attempts + 1,
            "max_ack_pending": page_size,
            "ack_wait": self.ack_wait_s,
            "metadata": {META_NAME: self.name, META_PATTERNS: json.dumps(list(patterns))},
        }

    async def open(
        self, patterns: Sequence[str], start_after: int, max_attempts: int, page_size: int
    ) -> api.ConsumerInfo:
        """The JetStream consumer, created from `start_after` + 1 when it does not exist, or
        brought to these patterns and bounds (its position stays); then pull from it."""
        wanted = self._config(patterns, max_attempts, page_size)
        try:
            info = await self._js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            config = api.ConsumerConfig(
                name=self.durable,
                durable_name=self.durable,
                description=f"soulspot bus consumer {self.name}",
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start_after + 1,
                ack_policy=api.AckPolicy.EXPLICIT,
                **wanted,
            )
            info = await self._js.add_consumer(self.stream, config)
        else:
            info = await self._update(info, wanted)
        self.patterns, self.max_deliver = tuple(patterns), max_attempts + 1
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        return info

    async def _update(self, info: api.ConsumerInfo, wanted: dict[str, Any]) -> api.ConsumerInfo:
        config = info.config
        # The server adds metadata of its own (`_nats.*`): only ours is compared and sent.
        metadata = {k: v for k, v in (config.metadata or {}).items() if not k.startswith("_nats")}
        current = {key: getattr(config, key) for key in wanted} | {"metadata": metadata}
        if current == wanted:
            return info
        # JetStream (>= 2.10) updates a consumer created again with its name; its deliver
        # policy and start may not change, so they go as they are.
        return await self._js.add_consumer(self.stream, config.evolve(**wanted))

    async def reconfigure(self, patterns: Sequence[str], max_attempts: int, page_size: int) -> None:
        """A later subscriber asked other patterns or attempts: the filter and max_deliver
        follow (JetStream keeps the consumer's position)."""
        if tuple(patterns) == self.patterns and max_attempts + 1 == self.max_deliver:
            return
        info = await self._js.consumer_info(self.stream, self.durable)
        await self._update(info, self._config(patterns, max_attempts, page_size))
        self.patterns, self.max_deliver = tuple(patterns), max_attempts + 1

    async def info(self) -> api.ConsumerInfo:
        info: api.ConsumerInfo = await self._js.consumer_info(self.stream, self.durable)
        return info

    async def exists(self) -> bool:
        try:
            await self.info()
        except NotFoundError:
            return False
        return True

    # -- pulling ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closed, or told gone: nothing to look at any more."""
        return self._sub is None or self._gone_told

    def start(self, room: Callable[[], int], arrived: Callable[[Msg], None]) -> None:
        """Pull in the background: up to `room()` messages at a time, each handed to
        `arrived` as it comes; `wake()` when room may have grown."""
        self._arrived = arrived
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pull(room), name=f"pull:{self.name}")

    def wake(self) -> None:
        self._room.set()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status:
            if status != "100":  # not a heartbeat: the request is over
                self._status = status
                self._ended.set()
            return
        self._got += 1
        if self._got >= self._asked:
            self._ended.set()
        if self._arrived is not None:
            self._arrived(msg)

    async def _pull(self, room: Callable[[], int]) -> None:
        """One pull request at a time, each message handed over as the server sends it (not
        when the batch is full, as nats-py's fetch does: that would hold an event until the
        request expires)."""
        backoff, failures = BackoffPolicy(initial_s=0.1, cap_s=2.0), 0
        expires = int(self.pull_wait_s * 1_000_000_000)
        while True:
            wanted = room()
            if wanted <= 0:
                self._pulling = False
                self._room.clear()
                await self._room.wait()
                continue
            self._pulling = True
            self._asked, self._got, self._status = wanted, 0, ""
            self._ended.clear()
            request = json.dumps({"batch": wanted, "expires": expires}).encode()
            try:
                await self._nc.publish(self._next, request, reply=self._inbox)
                with contextlib.suppress(TimeoutError):
                    # The server ends the request by its expiry at the latest.
                    async with asyncio.timeout(self.pull_wait_s + 1.0):
                        await self._ended.wait()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if await self._gone():
                    return
                _log.warning("pulling consumer %s failed: %s", self.name, err)
                await asyncio.sleep(backoff.delay(failures))
                failures += 1
                continue
            if self._status in ("", "404", "408"):
                # All came, or the request expired: pull again (an idle consumer's only
                # cost). Its info is read on the lease renewal tick, not here.
                failures = 0
                continue
            # Refused: the consumer deleted (409), no consumer to answer (503), leadership
            # moving, too many waiting pulls: look at it, and not at full speed.
            if await self._gone():
                return
            await asyncio.sleep(backoff.delay(failures))
            failures += 1

    async def look(self) -> None:
        """On a lease renewal tick: unless a pull is out and nothing wants JetStream's
        numbers, read the consumer's info: its numbers to `on_info`, or `on_gone` once it
        is gone (deleted through another router); the pulling stops then."""
        if self.closed:
            return
        if self._pulling and not (self.wants_info is not None and self.wants_info()):
            return  # a deletion ends the pull that is out: noticed there
        if await self._gone() and self._task is not None:
            self._task.cancel()

    async def _gone(self) -> bool:
        if self._gone_told:
            return True
        try:
            info = await self.info()
        except NotFoundError:
            pass
        except Exception:
            return False  # NATS away: not known to be gone
        else:
            if self.on_info is not None:
                self.on_info(info)
            return False
        if self._gone_told:  # the pull loop and the tick both looked
            return True
        self._gone_told = True
        _log.info(
            "consumer %s was deleted (through another router): ending its subscribers' streams",
            self.name,
            extra={"consumer": self.name},
        )
        if self.on_gone is not None:
            self.on_gone(self.name)
        return True

    # -- settling --------------------------------------------------------------------------

    def ack(self, msg: Msg) -> None:
        self._send(msg, ACK)

    def nak(self, msg: Msg, delay_s: float = 0.0) -> None:
        payload = NAK
        if delay_s > 0:
            payload += b" " + json.dumps({"delay": int(delay_s * 1_000_000_000)}).encode()
        self._send(msg, payload)

    def in_progress(self, msg: Msg) -> None:
        self._send(msg, IN_PROGRESS)

    def term(self, msg: Msg) -> None:
        self._send(msg, TERM)

    def after(self, first: Any, msg: Msg, payload: bytes) -> None:
        """Settle `msg` with `payload` once the awaitable `first` is done (a dead letter is
        written before its event is terminated: a crash between leaves it redelivered)."""

        async def run() -> None:
            try:
                await first
            except Exception:
                _log.exception("parking an event of consumer %s failed", self.name)
                self._send(msg, NAK)
                return
            self._send(msg, payload)

        task = asyncio.create_task(run(), name=f"park:{self.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _send(self, msg: Msg, payload: bytes) -> None:
        if not msg.reply:
            return
        self._settle.append((msg.reply, payload))
        if self._sender is None or self._sender.done():
            # One task sends what queued up meanwhile: a run of acks costs one wake-up.
            self._sender = asyncio.create_task(self._send_queued(), name=f"settle:{self.name}")

    async def _send_queued(self) -> None:
        while self._settle:
            queued, self._settle = self._settle, []
            try:
                await send_replies(self._nc, queued)
            except Exception as err:
                # JetStream sends them again after ack_wait: at least once.
                _log.warning(
                    "settling %d messages of consumer %s failed: %s", len(queued), self.name, err
                )

    async def close(self) -> None:
        """Stop pulling; send what is settled; unsubscribe (the consumer stays)."""
        task, self._task = self._task, None
        # Asked again if a consumer-info request lost the cancellation (see cancel_within):
        # a pull loop has nothing to clean up, and it ends by its pull's expiry at the latest.
        if not await cancel_within(task, self.pull_wait_s + 1.0):
            _log.warning("pulling consumer %s did not stop", self.name)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender
        await self._send_queued()
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class PullConsumers:
    """The pull consumers this router has open, by bus name: looked at on each lease
    renewal tick (see `look`)."""

    def __init__(self) -> None:
        self._open: dict[str, PullConsumer] = {}

    def add(self, pull: PullConsumer) -> None:
        self._open[pull.name] = pull

    def get(self, name: str) -> PullConsumer | None:
        return self._open.get(name)

    async def look(self, names: Sequence[str]) -> None:
        """Read the info of each named consumer open here (one request each): a deleted
        one is told gone, the others' numbers are refreshed. Closed ones are dropped."""
        for name in names:
            pull = self._open.get(name)
            if pull is None:
                continue
            if pull.closed:
                del self._open[name]
                continue
            await pull.look()
        for name in [n for n, p in self._open.items() if p.closed]:
            del self._open[name]
