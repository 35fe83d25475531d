"""The SQLite watch store: watches and their requested tracks survive a reopen, the number of
watches is bounded, a changed interval re-times the next run, removal forgets the tracks."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from router.watches.store import KnownTrack, RunRecord, SqliteWatchStore, WatchLimitReached

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
        assert set(await reopened.known_tracks("pl")) == {"spotify:a", "spotify:b"}
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
        assert await store.known_tracks("pl") == {}
    finally:
        await store.close()


async def test_a_track_requested_again_counts_its_attempts_until_the_library_holds_it(
    tmp_path: Path,
) -> None:
    store = SqliteWatchStore(tmp_path / "w.sqlite3")
    try:
        await store.upsert("pl", 3600, owner="", now=NOW, limit=5)
        await store.remember_tracks("pl", ["k"], NOW)
        await store.remember_tracks("pl", ["k"], NOW + 3600)
        assert (await store.known_tracks("pl"))["k"] == KnownTrack(2, NOW + 3600, False)
        # Found in the library: no attempt counted, and its last request time stays.
        await store.remember_tracks("pl", ["k"], NOW + 7200, in_library=True)
        await store.remember_tracks("pl", ["held"], NOW + 7200, in_library=True)
        known = await store.known_tracks("pl")
        assert known["k"] == KnownTrack(2, NOW + 3600, True)
        assert known["held"] == KnownTrack(0, NOW + 7200, True)
    finally:
        await store.close()


async def test_a_store_from_before_attempts_were_counted_gains_them_at_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE watches (playlist_id TEXT PRIMARY KEY, every_s REAL NOT NULL,"
            " next_run_at REAL NOT NULL, created_at REAL NOT NULL,"
            " owner TEXT NOT NULL DEFAULT '', name TEXT NOT NULL DEFAULT '', last_run_at REAL,"
            " last_result TEXT NOT NULL DEFAULT '', last_run_failed INTEGER NOT NULL DEFAULT 0,"
            " tracks_in_playlist INTEGER NOT NULL DEFAULT 0,"
            " last_requested INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0);"
            "CREATE TABLE watch_tracks (playlist_id TEXT NOT NULL, track_key TEXT NOT NULL,"
            " requested_at REAL NOT NULL, PRIMARY KEY (playlist_id, track_key));"
            f"INSERT INTO watches (playlist_id, every_s, next_run_at, created_at)"
            f" VALUES ('pl', 3600, {NOW}, {NOW});"
            f"INSERT INTO watch_tracks VALUES ('pl', 'k', {NOW});"
        )
    db.close()
    store = SqliteWatchStore(path)
    try:
        assert await store.known_tracks("pl") == {"k": KnownTrack(1, NOW, False)}
    finally:
        await store.close()


async def test_watches_stored_under_a_share_url_are_keyed_by_the_playlist_id_at_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.sqlite3"
    pid = "37i9dQZF1DXcBWIGoYBM5M"
    store = SqliteWatchStore(path)
    await store.upsert(pid, 3600, owner="", now=NOW, limit=5)
    await store.remember_tracks(pid, ["a"], NOW)
    await store.close()
    # As a version that kept ids as given would have stored them.
    with sqlite3.connect(path) as db:
        for given, track in (
            (f"https://open.spotify.com/playlist/{pid}?si=x", "b"),
            ("Liked", "c"),
        ):
            db.execute(
                "INSERT INTO watches (playlist_id, every_s, next_run_at, created_at)"
                " VALUES (?, 7200, ?, ?)",
                (given, NOW, NOW),
            )
            db.execute("INSERT INTO watch_tracks VALUES (?, ?, ?, 1, 0)", (given, track, NOW))
    db.close()
    reopened = SqliteWatchStore(path)
    try:
        assert sorted(w.playlist_id for w in await reopened.list_watches()) == [pid, "liked"]
        kept = await reopened.get(pid)
        assert kept is not None
        assert kept.every_s == 3600  # the watch already keyed by the id stays as it was
        assert set(await reopened.known_tracks(pid)) == {"a", "b"}
        assert set(await reopened.known_tracks("liked")) == {"c"}
    finally:
        await reopened.close()
