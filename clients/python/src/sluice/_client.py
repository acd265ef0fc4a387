"""The gRPC clients: `Client` (blocking) and `AsyncClient` (asyncio), their permits, `Denied`."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Tuple

import grpc
from google.protobuf import duration_pb2

from ._gen.sluice.v1 import sluice_pb2 as pb
from ._gen.sluice.v1 import sluice_pb2_grpc as pb_grpc

__all__ = ["Client", "AsyncClient", "Permit", "AsyncPermit", "Denied", "acquire", "usage_from_json"]

_log = logging.getLogger("sluice")
# Clients with reports that may still be on their way: flushed when the interpreter exits.
_unflushed: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for client in list(_unflushed):
        client.flush()


_RETRIES = (0.05, 0.25)
_MAX_RECHECKS = 64  # a lower-priority slot may move back up to once per overtake
# First and longest pause between asks while every in-flight slot of a service is held.
_IN_FLIGHT_POLL = (0.02, 0.25)


def _in_flight_pause(answer, started: float, max_wait: float, pause: float) -> Optional[float]:
    """How long to pause before asking again for an in-flight slot; None to stop asking."""
    if answer.granted or answer.reason != pb.Reason.Value("IN_FLIGHT"):
        return None
    left = max_wait - (time.monotonic() - started)
    if left <= 0:
        return None
    return min(pause, left, _seconds(answer.retry_after))
_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "ratelimit", "retry-after", "x-ms-retry-after")


class Denied(Exception):
    """No slot within max_wait: `retry_after` (seconds) says when one would be free."""

    def __init__(self, retry_after: float, reason: str, limit: str):
        super().__init__(f"denied by {limit or reason}; retry after {retry_after:.3f}s")
        self.retry_after = retry_after
        self.reason = reason
        self.limit = limit


def _duration(seconds: float):
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


def _headers(headers: Any) -> list:
    items: Iterable[Tuple[str, str]] = headers.items() if hasattr(headers, "items") else headers or []
    out = []
    for name, value in items:
        if str(name).lower().startswith(_RATE_LIMIT_PREFIXES):
            out.append(pb.Header(name=str(name), value=str(value)))
    return out[:100]


def usage_from_json(body: Any) -> Optional[Tuple[int, int]]:
    """(input, output) tokens from an OpenAI, Anthropic or Gemini JSON body, or None."""
    try:
        data = json.loads(body) if isinstance(body, (bytes, str)) else body
    except ValueError:
        return None
    if not isinstance(data, Mapping):
        return None
    u = data.get("usage") or {}
    if isinstance(u, Mapping):
        if "prompt_tokens" in u:
            return int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
        if "input_tokens" in u:
            cached = int(u.get("cache_creation_input_tokens", 0) or 0)
            return int(u["input_tokens"]) + cached, int(u.get("output_tokens", 0))
    m = data.get("usageMetadata")
    if isinstance(m, Mapping) and "promptTokenCount" in m:
        return int(m["promptTokenCount"]), int(m.get("candidatesTokenCount", 0))
    return None


@dataclass
class Permit:
    """A booked slot. Use it as a context manager (or call `report` yourself)."""

    service: str
    lease_id: str
    wait: float
    limit: str
    _client: Any = None
    reported: bool = False

    def _request(self, status: Any = None, headers: Any = None, usage: Optional[Tuple[int, int]] = None, body: bytes = b""):
        if status is not None and hasattr(status, "status_code"):
            response = status
            status = response.status_code
            headers = headers if headers is not None else getattr(response, "headers", None)
            if usage is None:
                try:
                    usage = usage_from_json(response.content if hasattr(response, "content") else b"")
                except Exception:  # noqa: BLE001 - a body we cannot read is not an error
                    usage = None
        request = pb.ReportResponseRequest(
            service=self.service,
            lease_id=self.lease_id,
            status_code=int(status),
            headers=_headers(headers),
            body=body if len(body) <= 64 * 1024 else b"",
        )
        if usage is not None:
            request.usage.input_tokens, request.usage.output_tokens = usage
        self.reported = True
        return request

    def report(self, status: Any, headers: Any = None, usage: Optional[Tuple[int, int]] = None, body: bytes = b""):
        """Reports the provider's answer: a response object, or status, headers and usage."""
        return self._client._stub.ReportResponse(self._request(status, headers, usage, body),
                                                metadata=self._client._metadata)

    def report_soon(self, status: Any, headers: Any = None, usage: Optional[Tuple[int, int]] = None,
                    body: bytes = b"") -> None:
        """`report` without waiting for Sluice's answer (the SDK transport does it for answers
        that set no cooldown, so the call returns sooner). The client keeps it until it is
        answered: `Client.flush()`, `close()` and the interpreter's exit wait for it; a failure
        is logged on the `sluice` logger."""
        self._client._send_soon(self._request(status, headers, usage, body))

    def abandon(self):
        """Reports that the call got no answer: its in-flight slot is released, nothing else."""
        return self._client._stub.ReportResponse(self._request(0), metadata=self._client._metadata)

    def __enter__(self) -> "Permit":
        return self

    def __exit__(self, *exc) -> bool:
        # A block left without a report (an exception, an early return) frees the slot at once.
        if not self.reported:
            try:
                self.abandon()
            except grpc.RpcError:  # never hide the block's own exception; the slot times out
                pass
        return False


def _credentials(token: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """The metadata every call carries: the bearer token, if any (argument, else SLUICE_TOKEN)."""
    token = token or os.environ.get("SLUICE_TOKEN")
    return (("authorization", f"Bearer {token}"),) if token else ()


class Client:
    """A synchronous client: `Client("127.0.0.1:50051").acquire(...)`."""

    def __init__(self, target: Optional[str] = None, client_id: str = "",
                 token: Optional[str] = None):
        self.target = target or os.environ.get("SLUICE_ADDR", "127.0.0.1:50051")
        self.client_id = client_id
        self._metadata = _credentials(token)
        self._channel = grpc.insecure_channel(self.target)
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        # Reports sent in the background (report_soon), in order, by one thread per process.
        self._reports: "queue.Queue" = queue.Queue()
        self._reporter_pid = 0
        self._reporter_lock = threading.Lock()
        _unflushed.add(self)

    def _send_soon(self, request) -> None:
        with self._reporter_lock:
            if self._reporter_pid != os.getpid():  # none yet, or this is a forked child
                self._reporter_pid = os.getpid()
                threading.Thread(target=self._send_reports, name="sluice-reports",
                                 daemon=True).start()
        self._reports.put(request)

    def _send_reports(self) -> None:
        while True:
            request = self._reports.get()
            try:
                self._stub.ReportResponse(request, metadata=self._metadata)
            except grpc.RpcError as e:
                _log.warning("sluice: report of %s failed: %s", request.service, e.code())
            except ValueError:  # the channel was closed
                pass
            finally:
                self._reports.task_done()

    def flush(self, timeout: float = 5.0) -> None:
        """Waits (at most `timeout` seconds) until every `report_soon` was answered."""
        deadline = time.monotonic() + timeout
        while self._reports.unfinished_tasks > 0 and time.monotonic() < deadline:
            time.sleep(0.002)

    def _send(self, request):
        for pause in (*_RETRIES, None):
            try:
                return self._stub.Acquire(request, metadata=self._metadata)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or pause is None:
                    raise
                time.sleep(pause)

    def acquire(self, service: str, tokens: int = 0, input_tokens: int = 0, output_tokens: int = 0,
                max_wait: float = 60.0, request_id: Optional[str] = None, priority: str = "") -> Permit:
        """Books a slot and sleeps until it comes; raises Denied if none within max_wait."""
        request = pb.AcquireRequest(
            service=service, tokens=tokens, input_tokens=input_tokens, output_tokens=output_tokens,
            max_wait=_duration(max_wait), request_id=request_id or str(uuid.uuid4()),
            client_id=self.client_id, priority=priority,
        )
        started, pause = time.monotonic(), _IN_FLIGHT_POLL[0]
        answer = self._send(request)
        # Every in-flight slot held: ask again (backing off) until a report frees one.
        while (step := _in_flight_pause(answer, started, max_wait, pause)) is not None:
            time.sleep(step)
            pause = min(pause * 2, _IN_FLIGHT_POLL[1])
            request.max_wait.CopyFrom(_duration(max(0.0, max_wait - (time.monotonic() - started))))
            answer = self._send(request)
        waited = time.monotonic() - started if pause > _IN_FLIGHT_POLL[0] else 0.0
        for _ in range(_MAX_RECHECKS):
            wait = _seconds(answer.wait)
            if not answer.granted or wait <= 0:
                break
            time.sleep(wait)
            waited += wait
            answer = self._send(request)  # same request id: same lease, current slot
        if answer.granted and _seconds(answer.wait) > 0:  # out of re-asks: sleep the last wait
            time.sleep(_seconds(answer.wait))
            waited += _seconds(answer.wait)
        if not answer.granted:
            raise Denied(_seconds(answer.retry_after), pb.Reason.Name(answer.reason), answer.limit)
        return Permit(service, answer.lease_id, waited, answer.limit, self)

    def status(self, service: str):
        """The service's live state (GetStatus)."""
        request = pb.GetStatusRequest(service=service)
        return self._stub.GetStatus(request, metadata=self._metadata).status

    def close(self) -> None:
        self.flush()
        _unflushed.discard(self)
        self._channel.close()


class AsyncClient:
    """The asyncio client: `async with client.acquire(...) as permit: ...`."""

    def __init__(self, target: Optional[str] = None, client_id: str = "",
                 token: Optional[str] = None):
        self.target = target or os.environ.get("SLUICE_ADDR", "127.0.0.1:50051")
        self.client_id = client_id
        self._metadata = _credentials(token)
        self._channel = grpc.aio.insecure_channel(self.target)
        self._stub = pb_grpc.RateLimiterStub(self._channel)
        # Reports sent in the background (report_soon): tasks of their own, so that no caller's
        # cancellation (an SDK's cleanup timeout, a task group) cuts one short.
        self._reports: "set[asyncio.Task]" = set()

    def _send_soon(self, request) -> None:
        task = asyncio.get_running_loop().create_task(self._report_in_background(request))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report_in_background(self, request) -> None:
        try:
            await self._stub.ReportResponse(request, metadata=self._metadata)
        except grpc.RpcError as e:
            _log.warning("sluice: report of %s failed: %s", request.service, e.code())

    async def flush(self, timeout: float = 5.0) -> None:
        """Waits (at most `timeout` seconds) until every `report_soon` was answered."""
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=timeout)

    async def _send(self, request):
        for pause in (*_RETRIES, None):
            try:
                return await self._stub.Acquire(request, metadata=self._metadata)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or pause is None:
                    raise
                await asyncio.sleep(pause)

    def acquire(self, service: str, **kwargs) -> "_AsyncAcquire":
        return _AsyncAcquire(self, service, kwargs)

    async def status(self, service: str):
        request = pb.GetStatusRequest(service=service)
        return (await self._stub.GetStatus(request, metadata=self._metadata)).status

    async def close(self) -> None:
        await self.flush()
        await self._channel.close()


class AsyncPermit(Permit):
    """A slot booked by `AsyncClient`: `report` and `abandon` are awaited."""

    async def report(self, status: Any, headers: Any = None, usage: Optional[Tuple[int, int]] = None, body: bytes = b""):
        return await self._client._stub.ReportResponse(self._request(status, headers, usage, body),
                                                metadata=self._client._metadata)

    async def abandon(self):
        return await self._client._stub.ReportResponse(self._request(0), metadata=self._client._metadata)


class _AsyncAcquire:
    def __init__(self, client: AsyncClient, service: str, kwargs: dict):
        self._client, self._service, self._kwargs = client, service, kwargs

    async def _run(self) -> AsyncPermit:
        k = self._kwargs
        request = pb.AcquireRequest(
            service=self._service, tokens=k.get("tokens", 0), input_tokens=k.get("input_tokens", 0),
            output_tokens=k.get("output_tokens", 0), max_wait=_duration(k.get("max_wait", 60.0)),
            request_id=k.get("request_id") or str(uuid.uuid4()), client_id=self._client.client_id,
            priority=k.get("priority", ""),
        )
        started, pause = time.monotonic(), _IN_FLIGHT_POLL[0]
        answer = await self._client._send(request)
        while (step := _in_flight_pause(answer, started, k.get("max_wait", 60.0), pause)) is not None:
            await asyncio.sleep(step)
            pause = min(pause * 2, _IN_FLIGHT_POLL[1])
            left = k.get("max_wait", 60.0) - (time.monotonic() - started)
            request.max_wait.CopyFrom(_duration(max(0.0, left)))
            answer = await self._client._send(request)
        waited = time.monotonic() - started if pause > _IN_FLIGHT_POLL[0] else 0.0
        for _ in range(_MAX_RECHECKS):
            wait = _seconds(answer.wait)
            if not answer.granted or wait <= 0:
                break
            await asyncio.sleep(wait)
            waited += wait
            answer = await self._client._send(request)
        if answer.granted and _seconds(answer.wait) > 0:  # out of re-asks: sleep the last wait
            await asyncio.sleep(_seconds(answer.wait))
            waited += _seconds(answer.wait)
        if not answer.granted:
            raise Denied(_seconds(answer.retry_after), pb.Reason.Name(answer.reason), answer.limit)
        return AsyncPermit(self._service, answer.lease_id, waited, answer.limit, self._client)

    def __await__(self):
        return self._run().__await__()

    async def __aenter__(self) -> AsyncPermit:
        self._permit = await self._run()
        return self._permit

    async def __aexit__(self, *exc) -> bool:
        if not self._permit.reported:
            try:
                await self._permit.abandon()
            except grpc.RpcError:  # never hide the block's own exception; the slot times out
                pass
        return False


_default: Optional[Client] = None


def acquire(service: str, **kwargs) -> Permit:
    """`Client().acquire` on a process-wide client to $SLUICE_ADDR (default 127.0.0.1:50051)."""
    global _default
    if _default is None:
        _default = Client()
    return _default.acquire(service, **kwargs)
