"""Watched playlists in NATS JetStream KV, shared by every router on the same NATS: a watch
added through one router is listed, run and removable through any, and each due run is made
by one router only.

Keys of the bucket (a playlist id or track key is written as one key token, base64url):

- `watches.<playlist>`: the watch as JSON (interval, next run, last result, tracks known),
  its `generation` (new each time the watch is added) and its claim (`claim_owner`,
  `claim_until`).
- `tracks.<playlist>.<generation>.<track>`: one track the watch has requested or found in
  the library. Under the generation, so tracks a removed watch left behind (a run that
  wrote while the watch went) never count for a watch added again later.

Every write is a compare-and-set on the revision read (create for a new key). A run begins
with a claim: the watch's key is rewritten with this router as `claim_owner` and
`claim_until` one lease from now, on the revision this router read, so of routers finding
the watch due at once exactly one wins; the winner renews the claim every third of the
lease while the run lasts, and `finish_run` (or `release`) clears it. A router that dies
mid-run leaves a claim that runs out within one lease, and the next scheduler to look takes
the watch by the same compare-and-set. A router whose claim ran out (NATS away longer than a
lease) and was taken meanwhile writes nothing more of its run: `remember_tracks` and
`finish_run` check the claim on the record they compare-and-set and raise WatchClaimLost.
`claim_until` is a wall-clock time, as every watch's
next run is: routers sharing a bucket need clocks within a small part of the lease (NTP).

Listings read the last message of each key through router.bus.jetstream.kv_listing (nats-py's
watch may end its first pass before the first key arrives). Once its scheduler asks
(`on_change`), the store follows the watch keys (kv_changes.py) and wakes it when another
router adds a watch or makes one due sooner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

import nats.js.errors as js_errors

from router.bus.jetstream.kv_bucket import KvBucketStore, from_token, key_token, purge_keys
from router.watches.kv_changes import WatchChangeFeed
from router.watches.store import (
    KnownTrack,
    WatchBusy,
    WatchClaimLost,
    WatchLimitReached,
    WatchRecord,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from router.watches.store import RunRecord

_log = logging.getLogger("router.watches.kv")

DEFAULT_BUCKET = "soulspot_playlist_watches"
DEFAULT_LEASE_S = 60.0
_WATCHES = "watches."
_TRACKS = "tracks."
# JetStream's error codes for a write whose expected last revision was not the key's.
_WRONG_LAST_SEQUENCE = (10071, 10164)


def _watch_key(playlist_id: str) -> str:
    return _WATCHES + key_token(playlist_id)


def _tracks_prefix(playlist_id: str, generation: str = "") -> str:
    prefix = f"{_TRACKS}{key_token(playlist_id)}."
    return f"{prefix}{generation}." if generation else prefix


def _encode(record: WatchRecord, generation: str) -> bytes:
    return json.dumps({**asdict(record), "generation": generation}).encode()


_FIELDS = frozenset(f.name for f in fields(WatchRecord))


def _decode(value: bytes) -> tuple[WatchRecord, str]:
    raw: dict[str, Any] = json.loads(value)
    generation = str(raw.pop("generation"))
    # Fields a newer router added are left out: routers of two versions share a bucket
    # during a rolling upgrade.
    return WatchRecord(**{k: v for k, v in raw.items() if k in _FIELDS}), generation


def _apply_run(record: WatchRecord, run: RunRecord, ended_at: float, next_run_at: float) -> None:
    """What a run leaves on its watch: as the SQLite store's finish_run."""
    if run.name:
        record.name = run.name
    record.last_run_at = ended_at
    record.last_result = run.result
    record.last_run_failed = run.failed
    record.next_run_at = next_run_at
    if not (run.failed and run.tracks_in_playlist == 0):
        record.tracks_in_playlist = run.tracks_in_playlist
    record.last_requested = run.requested
    record.failures = record.failures + 1 if run.failed else 0


class KvWatchStore(KvBucketStore):
    """Watches in a JetStream KV bucket, shared by the routers connected to the same NATS."""

    what = "the watch store"

    def __init__(
        self,
        servers: Sequence[str],
        *,
        bucket: str = DEFAULT_BUCKET,
        replicas: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(servers, bucket=bucket, replicas=replicas, lease_s=lease_s, owner=owner)
        self._clock = clock
        # playlist id -> the task renewing this router's claim on it while a run lasts.
        self._renewals: dict[str, asyncio.Task[None]] = {}
        # Watches this router claimed and has not let go of yet: `close` lets go of them,
        # those of runs cut short included.
        self._claimed: set[str] = set()
        # Other routers' changes, told to the scheduler (`on_change`); one feed per store.
        self._wake: Callable[[], None] | None = None
        self._feed: WatchChangeFeed | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._open_bucket(
            f"soulspot-watches-{self.owner}",
            "SoulSpot watched playlists and the tracks they requested",
        )
        self._start_feed()

    def on_change(self, wake: Callable[[], None]) -> None:
        """Call `wake` when a watch is added or made due sooner, through any router."""
        self._wake = wake
        self._start_feed()

    def _start_feed(self) -> None:
        if self._wake is None or self._nc is None or self._feed is not None:
            return
        self._feed = WatchChangeFeed(
            self._nc.jetstream(),
            self.bucket,
            _WATCHES + "*",
            due_of=lambda value: _decode(value)[0].due_at(),
            wake=self._wake,
        )
        self._feed.start()

    async def close(self) -> None:
        """Let go of this router's claims (another router may run those watches at once),
        then disconnect, each step within `close_step_s`; idempotent. With NATS out of reach
        a claim not let go of runs out within its lease."""
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.stop()  # bounded itself
        for playlist_id in list(self._renewals):
            await self._end_loop(self._renewals.pop(playlist_id), "a claim's renewal")
        for playlist_id in list(self._claimed):
            await self._close_step("letting a claim go", self.release(playlist_id))
        await self._disconnect()

    def _check_claim(self, playlist_id: str, record: WatchRecord) -> None:
        """Raise WatchClaimLost when a run of this router may no longer write the watch: this
        router claimed it and the claim is not its own any more, or another router holds a
        live claim on it. Checked on the record the write compares-and-sets, so a claim
        taken after the read makes the write fail and the check run again."""
        if record.claim_owner == self.owner:
            return
        if playlist_id in self._claimed or record.claimed_at(self._clock()):
            raise WatchClaimLost(playlist_id, record.claim_owner)

    # --- reading ---------------------------------------------------------------------------

    async def _read(self, playlist_id: str) -> tuple[WatchRecord, str, int] | None:
        """The watch, its generation and the revision read, or None."""
        try:
            entry = await self._require().get(_watch_key(playlist_id))
        except js_errors.KeyNotFoundError:  # KeyDeletedError is one
            return None
        assert entry.value is not None
        assert entry.revision is not None
        record, generation = _decode(entry.value)
        return record, generation, entry.revision

    async def get(self, playlist_id: str) -> WatchRecord | None:
        found = await self._read(playlist_id)
        return found[0] if found is not None else None

    async def list_watches(self) -> list[WatchRecord]:
        records = [_decode(v)[0] for v in (await self._listing(_WATCHES + "*")).values()]
        records.sort(key=lambda r: (r.next_run_at, r.playlist_id))
        return records

    async def known_tracks(self, playlist_id: str) -> dict[str, KnownTrack]:
        found = await self._read(playlist_id)
        if found is None:
            return {}
        prefix = _tracks_prefix(playlist_id, found[1])
        tracks = {}
        for key, value in (await self._listing(prefix + "*")).items():
            attempts, requested_at, held = json.loads(value)
            tracks[from_token(key.removeprefix(prefix))] = KnownTrack(
                int(attempts), float(requested_at), bool(held)
            )
        return tracks

    # --- writing ---------------------------------------------------------------------------

    async def _write(
        self, playlist_id: str, record: WatchRecord, generation: str, last: int
    ) -> bool:
        """Compare-and-set the watch on the revision read; False when it moved meanwhile."""
        try:
            await self._require().update(
                _watch_key(playlist_id), _encode(record, generation), last=last
            )
        except js_errors.KeyWrongLastSequenceError:
            return False
        return True

    async def upsert(
        self, playlist_id: str, every_s: float, *, owner: str, now: float, limit: int
    ) -> tuple[WatchRecord, bool]:
        kv = self._require()
        while True:
            found = await self._read(playlist_id)
            if found is None:
                # Counted from a listing: routers adding different watches at the same moment
                # may together go past the limit by one each.
                if len(await self._listing(_WATCHES + "*", values=False)) >= limit:
                    raise WatchLimitReached(limit)
                record = WatchRecord(playlist_id, every_s, next_run_at=now, created_at=now)
                record.owner = owner
                try:
                    await kv.create(_watch_key(playlist_id), _encode(record, uuid.uuid4().hex))
                except js_errors.KeyWrongLastSequenceError:
                    continue  # added through another router meanwhile: change that one
                return record, True
            record, generation, revision = found
            # A shorter interval takes effect at once, a longer one from the last run.
            base = record.last_run_at if record.last_run_at is not None else now
            record.every_s = every_s
            record.next_run_at = min(record.next_run_at, base + every_s)
            if await self._write(playlist_id, record, generation, revision):
                return record, False

    async def remove(self, playlist_id: str) -> WatchRecord | None:
        kv = self._require()
        while True:
            found = await self._read(playlist_id)
            if found is None:
                return None
            record, _generation, revision = found
            try:
                await kv.delete(_watch_key(playlist_id), last=revision)
            except js_errors.APIError as err:
                # nats-py's delete does not turn a wrong revision into its own error.
                if err.err_code in _WRONG_LAST_SEQUENCE:
                    continue  # changed meanwhile (a run, a claim): read it again
                raise
            break
        # Every generation's tracks, in one request: a late write of a run under way is left
        # under an old generation, which no watch reads.
        assert self._nc is not None
        await purge_keys(self._nc, self.bucket, _tracks_prefix(playlist_id))
        return record

    async def remember_tracks(
        self, playlist_id: str, keys: Sequence[str], now: float, *, in_library: bool = False
    ) -> None:
        found = await self._read(playlist_id) if keys else None
        if found is None:
            return
        self._check_claim(playlist_id, found[0])
        prefix = _tracks_prefix(playlist_id, found[1])
        # A request counts one attempt; finding it in the library counts none.
        attempt = 0 if in_library else 1
        new = 0
        for key in keys:
            if await self._remember(prefix + key_token(key), now, attempt, in_library):
                new += 1
        if new:
            await self._count_tracks(playlist_id, found[1], new)

    async def _remember(self, key: str, now: float, attempt: int, in_library: bool) -> bool:
        """Record one track; True when it was new to the watch."""
        kv = self._require()
        while True:
            try:
                entry = await kv.get(key)
            except js_errors.KeyNotFoundError:
                try:
                    await kv.create(key, json.dumps([attempt, now, in_library]).encode())
                except js_errors.KeyWrongLastSequenceError:
                    continue
                return True
            assert entry.value is not None
            attempts, requested_at, _held = json.loads(entry.value)
            value = [attempts + attempt, now if attempt else requested_at, in_library]
            try:
                await kv.update(key, json.dumps(value).encode(), last=entry.revision)
            except js_errors.KeyWrongLastSequenceError:
                continue
            return False

    async def _count_tracks(self, playlist_id: str, generation: str, new: int) -> None:
        while True:
            found = await self._read(playlist_id)
            if found is None or found[1] != generation:
                return  # removed (and perhaps added again) meanwhile
            record, _generation, revision = found
            self._check_claim(playlist_id, record)
            record.tracks_known += new
            if await self._write(playlist_id, record, generation, revision):
                return

    # --- runs ------------------------------------------------------------------------------

    async def claim(
        self, playlist_id: str, *, now: float, only_if_due: bool = False
    ) -> WatchRecord | None:
        while True:
            found = await self._read(playlist_id)
            if found is None:
                return None
            record, generation, revision = found
            if only_if_due and record.next_run_at > now:
                return None
            if record.claim_owner not in ("", self.owner) and record.claim_until > now:
                raise WatchBusy(playlist_id, record.claim_owner, record.claim_until)
            taken_from = record.claim_owner if record.claim_owner != self.owner else ""
            record.claim_owner, record.claim_until = self.owner, now + self.lease_s
            if not await self._write(playlist_id, record, generation, revision):
                continue  # another router claimed or changed it first: look again
            if taken_from:
                _log.warning(
                    "took over playlist watch %s from router %s, whose claim ran out",
                    playlist_id,
                    taken_from,
                    extra={"playlist_id": playlist_id},
                )
            self._claimed.add(playlist_id)
            self._renew_while_running(playlist_id)
            return record

    def _renew_while_running(self, playlist_id: str) -> None:
        if playlist_id not in self._renewals:
            self._renewals[playlist_id] = asyncio.get_running_loop().create_task(
                self._renew_forever(playlist_id), name=f"watch-claim-{playlist_id}"
            )

    async def _renew_forever(self, playlist_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self._renew(playlist_id):
                    _log.warning(
                        "lost the claim on playlist watch %s to another router",
                        playlist_id,
                        extra={"playlist_id": playlist_id},
                    )
                    return
            except Exception as err:  # NATS away: keep trying, the claim may run out
                _log.warning("could not renew the claim on watch %s: %s", playlist_id, err)

    async def _renew(self, playlist_id: str) -> bool:
        """Push this router's claim one lease on; False once it is not this router's."""
        while True:
            found = await self._read(playlist_id)
            if found is None or found[0].claim_owner != self.owner:
                return False
            record, generation, revision = found
            record.claim_until = self._clock() + self.lease_s
            if await self._write(playlist_id, record, generation, revision):
                return True

    async def _stop_renewing(self, playlist_id: str) -> None:
        await self._end_loop(self._renewals.pop(playlist_id, None), "a claim's renewal")

    async def release(self, playlist_id: str) -> None:
        await self._stop_renewing(playlist_id)
        while True:
            found = await self._read(playlist_id)
            if found is None or found[0].claim_owner != self.owner:
                break
            record, generation, revision = found
            record.claim_owner, record.claim_until = "", 0.0
            if await self._write(playlist_id, record, generation, revision):
                break
        self._claimed.discard(playlist_id)

    async def finish_run(
        self, playlist_id: str, run: RunRecord, *, ended_at: float, next_run_at: float
    ) -> WatchRecord | None:
        await self._stop_renewing(playlist_id)
        while True:
            found = await self._read(playlist_id)
            if found is None:
                self._claimed.discard(playlist_id)
                return None
            record, generation, revision = found
            try:
                self._check_claim(playlist_id, record)
            except WatchClaimLost:
                self._claimed.discard(playlist_id)
                raise
            _apply_run(record, run, ended_at, next_run_at)
            if record.claim_owner == self.owner:
                record.claim_owner, record.claim_until = "", 0.0
            if await self._write(playlist_id, record, generation, revision):
                self._claimed.discard(playlist_id)
                return record
