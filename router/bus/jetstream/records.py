"""How the JetStream store writes consumer state and dead letters: keys, tokens and values.

Consumer names and event_ids may hold any character, and KV keys and subject tokens may not:
each is written as "c"/"i" and its URL-safe base64 (no padding), which every KV key and
subject token accepts and no two names share.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from router.bus.store import ConsumerRecord, DeadLetterRecord, PendingRecord
from soulspot.events.v1 import envelope_pb2


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def consumer_token(name: str) -> str:
    """A consumer's name as a KV key or subject token."""
    return "c" + _b64(name)


def event_id_key(event_id: str) -> str:
    """An event_id as a key of the ids bucket."""
    return "i" + _b64(event_id)


def replay_key(consumer: str, sequence: int) -> str:
    """A queued replay's key: sorted by sequence within its consumer."""
    return f"{consumer_token(consumer)}.{sequence:020d}"


def envelope_from(data: bytes) -> envelope_pb2.EventEnvelope:
    env = envelope_pb2.EventEnvelope()
    env.ParseFromString(data)
    return env


@dataclass(slots=True)
class ConsumerState:
    """A durable consumer as the store holds it in memory and writes it to its KV key."""

    patterns: tuple[str, ...]
    floor: int
    inactive_s: float = 0.0
    idle_since_us: int = 0
    owner: str = ""
    done: set[int] = field(default_factory=set)
    # sequence -> (attempts, last_error) of log events that failed at least once.
    pending: dict[int, tuple[int, str]] = field(default_factory=dict)
    # The sequences of replayed dead letters queued for it (their records are KV keys).
    replays: set[int] = field(default_factory=set)

    def record(self, name: str) -> ConsumerRecord:
        return ConsumerRecord(
            name,
            self.patterns,
            self.floor,
            done_above_floor=set(self.done),
            pending={s: PendingRecord(a, e) for s, (a, e) in self.pending.items()},
            replays=len(self.replays),
            inactive_s=self.inactive_s,
            owner=self.owner,
        )

    def encode(self) -> bytes:
        return json.dumps(
            {
                "patterns": list(self.patterns),
                "floor": self.floor,
                "inactive_s": self.inactive_s,
                "idle_since_us": self.idle_since_us,
                "owner": self.owner,
                "done": sorted(self.done),
                "pending": [[s, a, e] for s, (a, e) in sorted(self.pending.items())],
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConsumerState:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            patterns=tuple(raw["patterns"]),
            floor=int(raw["floor"]),
            inactive_s=float(raw["inactive_s"]),
            idle_since_us=int(raw["idle_since_us"]),
            owner=str(raw["owner"]),
            done={int(s) for s in raw["done"]},
            pending={int(s): (int(a), str(e)) for s, a, e in raw["pending"]},
        )


def consumer_from_token(token: str) -> str:
    raw = token[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


def encode_replay(attempts: int, last_error: str, data: bytes) -> bytes:
    """A queued replay: its attempts so far, a newline, the dead letter's copy of the event
    (JSON never holds a raw newline, and the event's bytes go as they are)."""
    meta = json.dumps({"attempts": attempts, "last_error": last_error}).encode()
    return meta + b"\n" + data


def decode_replay(value: bytes) -> tuple[int, str, bytes]:
    meta, _, data = value.partition(b"\n")
    raw: dict[str, Any] = json.loads(meta)
    return int(raw["attempts"]), str(raw["last_error"]), data


# The header that carries a dead letter's record; the message's body is the event.
DEAD_LETTER_HEADER = "Soulspot-Dead-Letter"


def dead_letter_header(
    consumer: str, sequence: int, reason: int, attempts: int, last_error: str, at_us: int
) -> str:
    # One line of JSON: newlines in the error are escaped, as a header value needs.
    return json.dumps(
        {
            "consumer": consumer,
            "seq": sequence,
            "reason": reason,
            "attempts": attempts,
            "last_error": last_error,
            "parked_at_us": at_us,
        }
    )


def decode_dead_letter(dead_letter_id: int, header: str, data: bytes) -> DeadLetterRecord:
    raw: dict[str, Any] = json.loads(header)
    return DeadLetterRecord(
        dead_letter_id=dead_letter_id,
        consumer=str(raw["consumer"]),
        sequence=int(raw["seq"]),
        envelope=envelope_from(data),
        reason=int(raw["reason"]),
        attempts=int(raw["attempts"]),
        last_error=str(raw["last_error"]),
        parked_at_us=int(raw["parked_at_us"]),
    )
