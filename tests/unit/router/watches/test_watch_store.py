"""The SQLite watch store: watches and their requested tracks survive a reopen, the number of
watches is bounded, a changed interval re-times the next run, removal forgets the tracks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from router.watches.store import RunRecord, SqliteWatchStore, WatchLimitReached

if TYPE_CHECKING:
    from pathlib import Path

NOW = 1_000_000.0


async def test_watches_and_their_tracks_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "watches.sqlite3"
    store = SqliteWatchStore(path)
    record, created = await store.upsert(
        "pl", 3600, owner="spiffe://soulspot/client/cli", now=NOW, limit=5
    )
    assert created
    assert record.next_run_at == NOW
    await store.remember_tracks("pl", ["spotify:a", "spotify:b"], NOW)
    await store.finish_run(
        "pl", RunRecord("Mix", "2 new", False, 2, 2), ended_at=NOW + 1, next_run_at=NOW + 3601
    )
    await store.close()

    reopened = SqliteWatchStore(path)
    try:
        watch = await reopened.get("pl")
        assert watch is not None
        assert (watch.name, watch.owner, watch.next_run_at, watch.tracks_known) == (
            "Mix",
            "spiffe://soulspot/client/cli",
            NOW + 3601,
            2,
        )
        assert await reopened.known_tracks("pl") == {"spotify:a", "spotify:b"}
    finally:
        await reopened.close()


async def test_a_new_watch_beyond_the_limit_is_refused_but_an_existing_one_changes(
    tmp_path: Path,
) -> None:
    store = SqliteWatchStore(tmp_path / "w.sqlite3")
    try:
        await store.upsert("a", 3600, owner="", now=NOW, limit=2)
        await store.upsert("b", 3600, owner="", now=NOW, limit=2)
        with pytest.raises(WatchLimitReached):
            await store.upsert("c", 3600, owner="", now=NOW, limit=2)
        _, created = await store.upsert("a", 7200, owner="", now=NOW, limit=2)
        assert not created
        assert [w.playlist_id for w in await store.list_watches()] == ["a", "b"]
    finally:
        await store.close()


async def test_a_shorter_interval_brings_the_next_run_forward(tmp_path: Path) -> None:
    store = SqliteWatchStore(tmp_path / "w.sqlite3")
    try:
        await store.upsert("pl", 86_400, owner="", now=NOW, limit=5)
        await store.finish_run(
            "pl", RunRecord("", "ok", False, 0, 0), ended_at=NOW, next_run_at=NOW + 86_400
        )
        record, _ = await store.upsert("pl", 3600, owner="", now=NOW + 10, limit=5)
        assert record.every_s == 3600
        assert record.next_run_at == NOW + 3600
    finally:
        await store.close()


async def test_removing_a_watch_forgets_its_tracks_and_later_writes_do_nothing(
    tmp_path: Path,
) -> None:
    store = SqliteWatchStore(tmp_path / "w.sqlite3")
    try:
        await store.upsert("pl", 3600, owner="", now=NOW, limit=5)
        await store.remember_tracks("pl", ["k1"], NOW)
        removed = await store.remove("pl")
        assert removed is not None
        assert removed.tracks_known == 1
        assert await store.remove("pl") is None
        # A run that was in progress when the watch went leaves nothing behind.
        await store.remember_tracks("pl", ["k2"], NOW)
        assert (
            await store.finish_run(
                "pl", RunRecord("", "ok", False, 0, 0), ended_at=NOW, next_run_at=NOW + 1
            )
            is None
        )
        await store.upsert("pl", 3600, owner="", now=NOW, limit=5)
        assert await store.known_tracks("pl") == set()
    finally:
        await store.close()
