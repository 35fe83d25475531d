"""services.kit.rpc.policy: one fallback rule for the router's proxy and xDS routes."""

from __future__ import annotations

import grpc
import pytest

from services.kit.rpc import errors
from services.kit.rpc.policy import RETRYABLE_CODES, may_fall_back

Code = grpc.StatusCode


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.UNIMPLEMENTED])
def test_a_module_that_could_not_answer_is_replaced(code: grpc.StatusCode) -> None:
    assert may_fall_back(code, idempotent=False, time_left_s=0.0)


@pytest.mark.parametrize("code", [Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.INTERNAL])
def test_an_answer_is_not_replaced(code: grpc.StatusCode) -> None:
    assert not may_fall_back(code, idempotent=True, time_left_s=None)


def test_a_deadline_falls_back_only_for_idempotent_work_with_time_left() -> None:
    late = Code.DEADLINE_EXCEEDED
    assert may_fall_back(late, idempotent=True, time_left_s=None)
    assert may_fall_back(late, idempotent=True, time_left_s=0.5, min_left_s=0.005)
    assert not may_fall_back(late, idempotent=True, time_left_s=0.004, min_left_s=0.005)
    assert not may_fall_back(late, idempotent=False, time_left_s=None)


def test_the_kit_retries_the_codes_of_the_table() -> None:
    assert errors.TRANSIENT_CODES is RETRYABLE_CODES
    assert errors.is_transient(errors.Unavailable("x"))
    assert not errors.is_transient(errors.InvalidArgument("x"))
