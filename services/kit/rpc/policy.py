"""The mesh's one table of status codes: which failures another module may answer instead,
which are worth another attempt, and which say a module is unwell.

The router's proxy and the xDS route retry policies fall back by the same rule, and the kit's
retries retry the same codes, so a code added here changes every caller at once.
"""

from __future__ import annotations

import grpc

__all__ = [
    "BREAKER_CODES",
    "FALLBACK_CODES",
    "IDEMPOTENT_FALLBACK_CODES",
    "RETRYABLE_CODES",
    "SAME_REQUEST_RETRYABLE_CODES",
    "may_fall_back",
]

# Another module may well succeed where this one could not answer at all.
FALLBACK_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# A module that ran out of time may have done the work: only a capability declared
# idempotent is tried on another module after it, and only while the caller has time left.
IDEMPOTENT_FALLBACK_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED}
)
# Worth another attempt (elsewhere or later); everything else is an answer, not a failure.
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)
# A request the server recognises when it arrives twice (an event carries its event_id)
# may also be repeated after a deadline: the first copy either landed or did not.
SAME_REQUEST_RETRYABLE_CODES: frozenset[grpc.StatusCode] = RETRYABLE_CODES | frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED}
)
# Failures that say the module is unwell (UNIMPLEMENTED only says it lacks a method).
BREAKER_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def may_fall_back(
    code: grpc.StatusCode,
    *,
    idempotent: bool,
    time_left_s: float | None,
    min_left_s: float = 0.0,
) -> bool:
    """Whether a call that failed with `code` may go on to the next module.

    `time_left_s` is the caller's deadline still to run (None: no deadline); a fallback
    after a deadline needs more than `min_left_s` of it.
    """
    if code in FALLBACK_CODES:
        return True
    return (
        code in IDEMPOTENT_FALLBACK_CODES
        and idempotent
        and (time_left_s is None or time_left_s > min_left_s)
    )
