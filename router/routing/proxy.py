"""The capability proxy: serves every capability method and forwards the raw request bytes
to the best module, falling back on transient failures within the caller's deadline."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2

from router.metrics import router_metrics
from router.routing.registry import status_name
from services.kit.observability.metrics import MeshMetrics, default_metrics
from services.kit.rpc import context as ctx
from services.kit.rpc.errors import (
    InvalidArgument,
    MeshError,
    NotFound,
    Unavailable,
    Unimplemented,
    abort_with,
    bad_request,
)
from services.kit.rpc.policy import BREAKER_CODES, may_fall_back
from services.kit.rpc.validation import required_violations

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from prometheus_client.metrics import Counter, Histogram

    from router.routing.capabilities import Catalog, MethodSpec
    from router.routing.registry import ModuleEntry, Registry
    from router.routing.warnings import WarningBoard
    from router.settings import RouterSection

log = logging.getLogger("soulspot.router.proxy")

Context = grpc.aio.ServicerContext[Any, Any]
Metadata = tuple[tuple[str, str | bytes], ...]

# Hop-by-hop and routing metadata that must not travel on to the module.
_DROP_PREFIXES = ("grpc-", ":")
_DROP_KEYS = frozenset(
    {
        "user-agent",
        "content-type",
        "te",
        ctx.TRACEPARENT_KEY,
        ctx.CORRELATION_ID_KEY,
        ctx.TARGET_MODULE_KEY,
        ctx.NO_FALLBACK_KEY,
    }
)
# Keys the router writes into a response: a module's own values are replaced, not doubled.
_OWN_RESPONSE_KEYS = frozenset({ctx.MODULE_KEY, ctx.ATTEMPTS_KEY, ctx.CORRELATION_ID_KEY})
# Left over for the answer itself when a caller's deadline is about to run out.
_MIN_ATTEMPT_S = 0.005


class _Request:
    """What the router reads from a call's metadata, once."""

    __slots__ = ("forward", "no_fallback", "target")

    def __init__(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        self.target: str | None = None
        self.no_fallback = False
        forward: list[tuple[str, str | bytes]] = []
        for key, value in metadata or ():
            if key == ctx.TARGET_MODULE_KEY:
                self.target = (value.decode() if isinstance(value, bytes) else value).strip()
            elif key == ctx.NO_FALLBACK_KEY:
                text = value.decode() if isinstance(value, bytes) else value
                self.no_fallback = text.strip().lower() in ("1", "true", "yes")
            elif key not in _DROP_KEYS and not key.startswith(_DROP_PREFIXES):
                forward.append((key, value))
        # The module's span is a child of the router's; the correlation id travels on.
        forward.append((ctx.TRACEPARENT_KEY, str(ctx.child_traceparent())))
        correlation_id = ctx.current_correlation_id()
        if correlation_id:
            forward.append((ctx.CORRELATION_ID_KEY, correlation_id))
        self.forward: Metadata = tuple(forward)


class _CallMetrics:
    """The proxy's share of the metrics, with the labelled children cached: `.labels()`
    takes a lock and builds a key on every use, which a per-call path cannot afford."""

    def __init__(self, metrics: MeshMetrics) -> None:
        self.metrics = router_metrics(metrics)
        self._calls: dict[tuple[str, str, grpc.StatusCode], tuple[Counter, Histogram]] = {}

    def call(self, capability: str, module: str, code: grpc.StatusCode, started: float) -> None:
        """One attempt that reached a module, `started` by time.perf_counter()."""
        seconds = time.perf_counter() - started
        key = (capability, module, code)
        children = self._calls.get(key)
        if children is None:
            children = self._calls[key] = (
                self.metrics.calls.labels(capability, module, code.name),
                self.metrics.call_seconds.labels(capability, module),
            )
        children[0].inc()
        children[1].observe(seconds)

    def fallback(self, capability: str, from_module: str, to_module: str) -> None:
        # Rare (a module failed): no cache needed.
        self.metrics.record_fallback(capability, from_module, to_module)


class CapabilityProxy(grpc.GenericRpcHandler):
    """A generic handler for every capability method in the catalog."""

    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        warnings: WarningBoard,
        settings: RouterSection,
        metrics: MeshMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.catalog = catalog
        self.warnings = warnings
        self.settings = settings
        self.metrics = _CallMetrics(metrics if metrics is not None else default_metrics())
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._first_try: dict[str, Metadata] = {}
        for method, spec in catalog.by_method.items():
            handler = self._handler(spec)
            if handler is not None:
                self._handlers[method] = handler

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)

    def _handler(self, spec: MethodSpec) -> grpc.RpcMethodHandler[Any, Any] | None:
        if spec.request_streaming:
            log.warning("client-streaming capability %s is not proxied", spec.capability)
            return None
        # No (de)serializers: the request and the response stay bytes end to end. Partials,
        # not wrapper coroutines: one frame less on every call.
        if spec.response_streaming:
            return grpc.unary_stream_rpc_method_handler(functools.partial(self._stream, spec))
        return grpc.unary_unary_rpc_method_handler(functools.partial(self._unary, spec))

    # -- shared steps ---------------------------------------------------------------------

    def _validate(self, spec: MethodSpec, request: bytes) -> None:
        """Parse only to check: the original bytes are what gets forwarded."""
        try:
            message = spec.request_type.FromString(request)
        except (DecodeError, ValueError) as err:
            raise InvalidArgument(
                f"{spec.method}: the request is not a valid "
                f"{spec.request_type.DESCRIPTOR.full_name}: {err}",
                details=[bad_request({"request": "the request bytes do not parse"})],
            ) from None
        violations = required_violations(message)
        if violations:
            fields = ", ".join(v.field for v in violations)
            raise InvalidArgument(
                f"{spec.request_type.DESCRIPTOR.full_name}: missing required fields: {fields}",
                details=[error_details_pb2.BadRequest(field_violations=violations)],
            )

    def _candidates(self, spec: MethodSpec, request: _Request) -> list[ModuleEntry]:
        if request.target is not None:
            return [self._target(spec, request.target)]
        found = self.registry.candidates(spec.capability)
        if not found:
            raise self._no_module(spec)
        return found

    def _target(self, spec: MethodSpec, name: str) -> ModuleEntry:
        entry = self.registry.get(name)
        if entry is None:
            raise NotFound(
                f"no module named {name!r} is registered",
                details=[
                    error_details_pb2.ResourceInfo(
                        resource_type="module", resource_name=name, description="not registered"
                    )
                ],
            )
        offer = entry.offers.get(spec.capability)
        if offer is None:
            raise Unimplemented(f"module {name!r} does not serve {spec.capability}")
        if not entry.healthy:
            raise Unavailable(f"module {name!r} is not healthy: {entry.status_reason}")
        if not self.registry.requirements_met(offer):
            missing = ", ".join(offer.required_modules)
            raise Unavailable(f"module {name!r} needs {missing} for {spec.capability}")
        return entry

    def _no_module(self, spec: MethodSpec) -> MeshError:

        providers = self.registry.providers(spec.capability)
        described = [f"{e.name} ({status_name(e.status)}: {e.status_reason})" for e, _ in providers]
        for entry, offer in providers:
            if entry.healthy and not self.registry.requirements_met(offer):
                described[[e for e, _ in providers].index(entry)] = (
                    f"{entry.name} (waiting for {', '.join(offer.required_modules)})"
                )
        if providers:
            message = (
                f"no healthy module for capability {spec.capability}; "
                f"modules that could serve it: {', '.join(described)}"
            )
        else:
            message = f"no module serving capability {spec.capability} is registered"
        self.warnings.raise_unavailable(
            spec.capability,
            ",".join(e.name for e, _ in providers),
            ",".join(status_name(e.status) for e, _ in providers),
        )
        return Unavailable(
            message,
            details=[
                error_details_pb2.ErrorInfo(
                    reason="NO_HEALTHY_MODULE",
                    domain="soulspot.router",
                    metadata={"capability": spec.capability, "method": spec.method},
                )
            ],
        )

    def _callable(self, entry: ModuleEntry, spec: MethodSpec) -> Any:
        found = entry.callables.get(spec.method)
        if found is None:
            channel = entry.channel
            if channel is None:
                return None
            if spec.response_streaming:
                found = channel.unary_stream(spec.method)
            else:
                found = channel.unary_unary(spec.method)
            entry.callables[spec.method] = found
        return found

    def _attempt_timeout(
        self, spec: MethodSpec, remaining: float | None, more: bool
    ) -> float | None:
        if not (spec.idempotent and more) or spec.response_streaming:
            return remaining
        # A hanging module must leave time for the next candidate.
        if remaining is None:
            return self.settings.default_attempt_timeout_s
        return remaining * self.settings.attempt_share

    def _may_fall_back(
        self, spec: MethodSpec, code: grpc.StatusCode, remaining: float | None
    ) -> bool:
        return may_fall_back(
            code, idempotent=spec.idempotent, time_left_s=remaining, min_left_s=_MIN_ATTEMPT_S
        )

    def _first_try_answer(self, entry: ModuleEntry) -> Metadata:
        """`_answer_metadata` for the usual case, a first attempt that succeeded: the same
        tuple every time, built once per module."""
        found = self._first_try.get(entry.name)
        if found is None:
            found = self._first_try[entry.name] = self._answer_metadata(entry, [f"{entry.name}:OK"])
        return found

    @staticmethod
    def _answer_metadata(entry: ModuleEntry | None, attempts: list[str]) -> Metadata:
        md: list[tuple[str, str | bytes]] = []
        if entry is not None:
            md.append((ctx.MODULE_KEY, entry.name))
        md.append((ctx.ATTEMPTS_KEY, ",".join(attempts)))
        return tuple(md)

    @staticmethod
    async def _relay_error(context: Context, err: grpc.aio.AioRpcError, own: Metadata) -> None:
        """End the call with the module's status unchanged: code, message, rich details."""
        theirs = tuple(
            (k, v) for k, v in (err.trailing_metadata() or ()) if k not in _OWN_RESPONSE_KEYS
        )
        existing = tuple(context.trailing_metadata() or ())
        await context.abort(
            err.code(), err.details() or "", trailing_metadata=(*existing, *theirs, *own)
        )

    # -- what unary and streaming calls share ---------------------------------------------

    async def _begin(
        self, spec: MethodSpec, request: bytes, context: Context
    ) -> tuple[_Request, list[ModuleEntry], float | None]:
        """Check the request, pick the candidates and fix the deadline (loop time), or abort."""
        try:
            self._validate(spec, request)
            req = _Request(context.invocation_metadata())
            candidates = self._candidates(spec, req)
        except MeshError as err:
            await abort_with(context, err)
        time_left = context.time_remaining()
        ends = None if time_left is None else asyncio.get_running_loop().time() + time_left
        return req, candidates, ends

    def _failed(
        self,
        spec: MethodSpec,
        entry: ModuleEntry,
        err: grpc.aio.AioRpcError,
        started: float,
        attempts: list[str],
        ends: float | None,
        *,
        more: bool,
    ) -> bool:
        """Account for a failed attempt; True when the call should go on to the next module."""
        code = err.code()
        self.metrics.call(spec.capability, entry.name, code, started)
        attempts.append(f"{entry.name}:{code.name}")
        if code in BREAKER_CODES:
            entry.breaker.record_failure()
        else:
            entry.breaker.record_success()
        left = None if ends is None else ends - asyncio.get_running_loop().time()
        return more and self._may_fall_back(spec, code, left)

    async def _exhausted(
        self,
        spec: MethodSpec,
        context: Context,
        last: grpc.aio.AioRpcError | None,
        last_entry: ModuleEntry | None,
        attempts: list[str],
    ) -> None:
        """No module answered: the last module's error, or why none was tried. Aborts."""
        if last is not None:
            await self._relay_error(context, last, self._answer_metadata(last_entry, attempts))
        if not attempts:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{spec.capability}: the caller's deadline ran out before a module was tried",
            )
        # Every candidate's breaker refused the call.
        await abort_with(
            context,
            Unavailable(
                f"no module can take {spec.capability} now: circuit breakers open "
                f"({', '.join(attempts)})",
                metadata=self._answer_metadata(None, attempts),
            ),
        )

    # -- unary ----------------------------------------------------------------------------

    async def _unary(self, spec: MethodSpec, request: bytes, context: Context) -> bytes:
        req, candidates, ends = await self._begin(spec, request, context)
        loop = asyncio.get_running_loop()
        attempts: list[str] = []
        last: grpc.aio.AioRpcError | None = None
        last_entry: ModuleEntry | None = None
        fall_back = not req.no_fallback and req.target is None
        capability = spec.capability
        for index, entry in enumerate(candidates):
            remaining = None if ends is None else ends - loop.time()
            if remaining is not None and remaining <= _MIN_ATTEMPT_S:
                break
            call = self._callable(entry, spec)
            if call is None or not entry.breaker.allow():
                attempts.append(f"{entry.name}:CIRCUIT_OPEN")
                continue
            if last_entry is not None:
                self.metrics.fallback(capability, last_entry.name, entry.name)
            more = fall_back and index < len(candidates) - 1
            started = time.perf_counter()
            try:
                response = await call(
                    request,
                    timeout=self._attempt_timeout(spec, remaining, more),
                    metadata=req.forward,
                )
            except grpc.aio.AioRpcError as err:
                last, last_entry = err, entry
                if self._failed(spec, entry, err, started, attempts, ends, more=more):
                    continue
                await self._relay_error(context, err, self._answer_metadata(entry, attempts))
            except asyncio.CancelledError:
                self.metrics.call(capability, entry.name, grpc.StatusCode.CANCELLED, started)
                entry.breaker.release()
                raise
            self.metrics.call(capability, entry.name, grpc.StatusCode.OK, started)
            entry.breaker.record_success()
            if attempts:
                attempts.append(f"{entry.name}:OK")
                own = self._answer_metadata(entry, attempts)
            else:
                own = self._first_try_answer(entry)
            # Trailing only: initial metadata would cost a unary call a batch of its own.
            context.set_trailing_metadata((*tuple(context.trailing_metadata() or ()), *own))
            return cast("bytes", response)
        await self._exhausted(spec, context, last, last_entry, attempts)
        raise AssertionError("unreachable")  # _exhausted aborts

    # -- server streaming -----------------------------------------------------------------

    async def _stream(
        self, spec: MethodSpec, request: bytes, context: Context
    ) -> AsyncIterator[bytes]:
        req, candidates, ends = await self._begin(spec, request, context)
        loop = asyncio.get_running_loop()
        attempts: list[str] = []
        last: grpc.aio.AioRpcError | None = None
        last_entry: ModuleEntry | None = None
        fall_back = not req.no_fallback and req.target is None
        capability = spec.capability
        for index, entry in enumerate(candidates):
            remaining = None if ends is None else ends - loop.time()
            if remaining is not None and remaining <= _MIN_ATTEMPT_S:
                break
            call_factory = self._callable(entry, spec)
            if call_factory is None or not entry.breaker.allow():
                attempts.append(f"{entry.name}:CIRCUIT_OPEN")
                continue
            if last_entry is not None:
                self.metrics.fallback(capability, last_entry.name, entry.name)
            more = fall_back and index < len(candidates) - 1
            # A stream's attempt lasts until its status: the whole stream is timed.
            started = time.perf_counter()
            call = call_factory(request, timeout=remaining, metadata=req.forward)
            first = False
            try:
                async for item in call:
                    if not first:
                        # Fallback ends here: the caller has seen this module's data.
                        first = True
                        entry.breaker.record_success()
                        attempts.append(f"{entry.name}:OK")
                        await context.send_initial_metadata(self._answer_metadata(entry, attempts))
                    yield cast("bytes", item)
            except grpc.aio.AioRpcError as err:
                if first:
                    # Data reached the caller: no fallback, the module's status is the answer.
                    code = err.code()
                    self.metrics.call(capability, entry.name, code, started)
                    attempts[-1] = f"{entry.name}:{code.name}"
                    await self._relay_error(context, err, self._answer_metadata(entry, attempts))
                last, last_entry = err, entry
                if self._failed(spec, entry, err, started, attempts, ends, more=more):
                    continue
                await self._relay_error(context, err, self._answer_metadata(entry, attempts))
            except asyncio.CancelledError:
                call.cancel()
                self.metrics.call(capability, entry.name, grpc.StatusCode.CANCELLED, started)
                entry.breaker.release()
                raise
            self.metrics.call(capability, entry.name, grpc.StatusCode.OK, started)
            if not first:
                entry.breaker.record_success()
                attempts.append(f"{entry.name}:OK")
            own = self._answer_metadata(entry, attempts)
            context.set_trailing_metadata((*tuple(context.trailing_metadata() or ()), *own))
            return
        await self._exhausted(spec, context, last, last_entry, attempts)
