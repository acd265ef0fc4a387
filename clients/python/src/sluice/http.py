"""Sluice under the official SDKs: an HTTP transport for `openai`, `anthropic` and any client on
`httpx2` (what those SDKs are built on) or plain `httpx`.

    import anthropic, openai, sluice, sluice.http

    sc = sluice.Client("127.0.0.1:50051")
    oai = openai.OpenAI(http_client=sluice.http.client(sc))
    claude = anthropic.Anthropic(http_client=sluice.http.client(sc))
    # async: openai.AsyncOpenAI(http_client=sluice.http.async_client(sluice.AsyncClient(...)))

Every model call the SDK sends, its own retries included, is acquired first (service and cost
from the request, see `sluice.calls`), waiting up to `max_wait` for its slot; the answer is
reported with its status, rate-limit headers and usage (the JSON body's, or a streamed answer's
final usage event, read as the SDK reads the stream). A request that gets no answer (connection
error, timeout) is abandoned: its in-flight slot is freed at once. A streamed answer that breaks
mid-body (after its 2xx status) is reported, not abandoned, when the SDK closes it: with its
status and the usage its events carried so far, if any; that frees its in-flight slot too.
Requests that are not model calls (no JSON body naming a model) pass through untouched.

When no slot comes within `max_wait` the transport either raises `sluice.Denied`
(`on_denied="raise"`, the default) or answers the SDK with a 429 carrying `retry-after-ms`
(`on_denied="429"`), so the SDK's own backoff waits and retries, and raises its own
`RateLimitError` when its retries are spent.

With "raise", what the caller sees depends on the SDK. `openai` lets `sluice.Denied` through as
it is, at once, whatever its `max_retries`. `anthropic` wraps any transport exception as its
`APIConnectionError` (`sluice.http.denial(err)` finds the `Denied` in its cause) and retries it
`max_retries` times (default 2) after its own backoff, each retry acquiring again: the denial
comes after max_retries + 1 acquires. Build such an SDK client with `max_retries=0` for one
acquire and the denial at once (the Celery integration does), or use "429" for retries paced by
Sluice.

A success is reported without waiting for Sluice's answer (the blocking client sends it in the
background and waits for what is still on its way at `flush()`, `close()` and exit); an error
answer (a 429) is reported before the SDK sees it, so its retry finds the cooldown in place. If
Sluice cannot be reached for a report, the call's answer still goes to the SDK (the error is
logged on the `sluice` logger); an acquire that fails raises, as the call must not go unbooked.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from typing import Any, Dict, Optional, Tuple

import grpc

from ._client import AsyncClient, Client, Denied
from .calls import Call, CallRules, SseUsage

__all__ = ["transport", "async_transport", "client", "async_client", "denial"]

_log = logging.getLogger("sluice")
#: Error bodies larger than this are not sent to Sluice (it reads quota causes from them).
_MAX_BODY = 64 * 1024


def _module(http: Any = None) -> Any:
    """The HTTP library: the one given, else httpx2 (the SDKs'), else httpx."""
    if http is not None:
        return http
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("sluice.http needs httpx2 or httpx: pip install 'sluice-client[http]'")


def denial(err: BaseException) -> Optional[Denied]:
    """The `sluice.Denied` behind an SDK's exception (its cause chain), or None."""
    seen = 0
    current: Optional[BaseException] = err
    while current is not None and seen < 16:
        if isinstance(current, Denied):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


class _Options:
    def __init__(self, rules: Optional[CallRules], max_wait: float, on_denied: str, priority: str,
                 **rule_options: Any):
        if on_denied not in ("raise", "429"):
            raise ValueError(f"on_denied must be 'raise' or '429', not {on_denied!r}")
        if rules is not None and rule_options:
            raise ValueError("pass either rules= or its fields (service=, estimate_input=, ...)")
        self.rules = rules or CallRules(**rule_options)
        self.max_wait = float(max_wait)
        self.on_denied = on_denied
        self.priority = priority


def _call_of(options: _Options, request: Any) -> Optional[Call]:
    kind = request.headers.get("content-type", "")
    content = request.read() if kind.startswith("application/json") else b""
    return options.rules.read(request.method, str(request.url), content)


def _denied_response(mod: Any, denied: Denied, request: Any) -> Any:
    body = {"error": {"message": f"sluice: {denied}", "type": "sluice_denied",
                      "code": "rate_limit_exceeded"}}
    ms = max(1, math.ceil(denied.retry_after * 1000))
    return mod.Response(
        429,
        headers={"retry-after-ms": str(ms), "retry-after": str(math.ceil(ms / 1000)),
                 "x-sluice-denied": denied.reason, "content-type": "application/json"},
        content=json.dumps(body).encode(),
        request=request,
    )


def _streams(response: Any) -> Tuple[bool, bool]:
    """(is a server-sent event stream, its bytes are compressed)."""
    kind = response.headers.get("content-type", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    return kind.startswith("text/event-stream"), encoding not in ("", "identity")


def _usage_of(body: bytes) -> Optional[Tuple[int, int]]:
    from ._client import usage_from_json

    return usage_from_json(body)


def _report_sync(permit: Any, status: int, headers: Any, usage: Any, body: bytes = b"") -> Any:
    try:
        return permit.report(status, headers, usage, body)
    except grpc.RpcError as e:
        _log.warning("sluice: report of %s failed: %s", permit.service, e.code())
        return None


async def _report_async(permit: Any, status: int, headers: Any, usage: Any, body: bytes = b"") -> Any:
    try:
        return await permit.report(status, headers, usage, body)
    except grpc.RpcError as e:
        _log.warning("sluice: report of %s failed: %s", permit.service, e.code())
        return None


def _note(response: Any, permit: Any, answer: Any) -> None:
    """Leaves Sluice's view of the call on the response, `response.extensions["sluice"]`: its
    service, how long it waited for its slot, and the cooldown Sluice answered the report with
    (the Celery integration retries a 429 after it)."""
    cooldown = 0.0
    if answer is not None and answer.HasField("cooldown"):
        cooldown = answer.cooldown.seconds + answer.cooldown.nanos / 1e9
    response.extensions["sluice"] = {"service": permit.service, "waited": permit.wait,
                                     "cooldown": cooldown}


_CLASSES: Dict[int, Tuple[type, type]] = {}


def _classes(mod: Any) -> Tuple[type, type]:
    """The transport classes for HTTP library `mod` (built once per library)."""
    key = id(mod)
    if key in _CLASSES:
        return _CLASSES[key]

    class WatchedStream(mod.SyncByteStream):
        """A streamed answer passed through to the SDK; reported when it ends or is closed."""

        def __init__(self, inner: Any, permit: Any, status: int, headers: Any, encoded: bool):
            self._inner, self._permit, self._status, self._headers = inner, permit, status, headers
            self._sse = None if encoded else SseUsage()
            self._done = False

        def __iter__(self):
            for chunk in self._inner:
                if self._sse is not None:
                    self._sse.feed(chunk)
                yield chunk
            self._finish()

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._finish()

        def _finish(self) -> None:
            if not self._done:
                self._done = True
                usage = self._sse.usage() if self._sse is not None else None
                try:
                    self._permit.report_soon(self._status, self._headers, usage)
                except grpc.RpcError as e:
                    _log.warning("sluice: report of %s failed: %s", self._permit.service, e.code())

    class SluiceTransport(mod.BaseTransport):
        """Acquires every model call before `inner` sends it; reports the answer."""

        def __init__(self, sluice: Client, inner: Any = None, **options: Any):
            self.sluice = sluice
            self.inner = inner if inner is not None else mod.HTTPTransport()
            self.options = _Options(**options)

        def handle_request(self, request: Any) -> Any:
            call = _call_of(self.options, request)
            if call is None:
                return self.inner.handle_request(request)
            try:
                permit = self.sluice.acquire(
                    call.service, input_tokens=call.input_tokens,
                    output_tokens=call.output_tokens, max_wait=self.options.max_wait,
                    priority=self.options.priority)
            except Denied as denied:
                if self.options.on_denied == "429":
                    return _denied_response(mod, denied, request)
                raise
            try:
                response = self.inner.handle_request(request)
            except BaseException:
                try:
                    permit.abandon()
                except grpc.RpcError:
                    pass  # the slot times out
                raise
            sse, encoded = _streams(response)
            if sse and response.status_code < 300:
                response.stream = WatchedStream(response.stream, permit, response.status_code,
                                                response.headers, encoded)
                return response
            body = response.read()
            if response.status_code < 300:
                # A success sets no cooldown: the call need not wait for Sluice's answer.
                permit.report_soon(response.status_code, response.headers, _usage_of(body))
                _note(response, permit, None)
                return response
            errors = body if len(body) <= _MAX_BODY else b""
            answer = _report_sync(permit, response.status_code, response.headers, None, errors)
            _note(response, permit, answer)
            return response

        def close(self) -> None:
            self.inner.close()

    class WatchedAsyncStream(mod.AsyncByteStream):
        """`WatchedStream` for asyncio."""

        def __init__(self, inner: Any, permit: Any, status: int, headers: Any, encoded: bool):
            self._inner, self._permit, self._status, self._headers = inner, permit, status, headers
            self._sse = None if encoded else SseUsage()
            self._done = False

        async def __aiter__(self):
            async for chunk in self._inner:
                if self._sse is not None:
                    self._sse.feed(chunk)
                yield chunk
            await self._finish()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                await self._finish()

        async def _finish(self) -> None:
            # Sent in the background: an SDK drains a finished stream under a short timeout
            # (openai's cleanup gives it 0.1 s), which must not cancel the report.
            if not self._done:
                self._done = True
                usage = self._sse.usage() if self._sse is not None else None
                self._permit.report_soon(self._status, self._headers, usage)

    class AsyncSluiceTransport(mod.AsyncBaseTransport):
        """`SluiceTransport` for asyncio SDK clients, on a `sluice.AsyncClient`."""

        def __init__(self, sluice: AsyncClient, inner: Any = None, **options: Any):
            self.sluice = sluice
            self.inner = inner if inner is not None else mod.AsyncHTTPTransport()
            self.options = _Options(**options)

        async def handle_async_request(self, request: Any) -> Any:
            kind = request.headers.get("content-type", "")
            if kind.startswith("application/json"):
                await request.aread()
            call = _call_of(self.options, request)
            if call is None:
                return await self.inner.handle_async_request(request)
            try:
                permit = await self.sluice.acquire(
                    call.service, input_tokens=call.input_tokens,
                    output_tokens=call.output_tokens, max_wait=self.options.max_wait,
                    priority=self.options.priority)
            except Denied as denied:
                if self.options.on_denied == "429":
                    return _denied_response(mod, denied, request)
                raise
            try:
                response = await self.inner.handle_async_request(request)
            except BaseException:
                try:
                    await permit.abandon()
                except grpc.RpcError:
                    pass
                raise
            sse, encoded = _streams(response)
            if sse and response.status_code < 300:
                response.stream = WatchedAsyncStream(response.stream, permit,
                                                     response.status_code, response.headers,
                                                     encoded)
                return response
            body = await response.aread()
            if response.status_code < 300:
                # As in the blocking transport: a success sets no cooldown, so it is not awaited.
                permit.report_soon(response.status_code, response.headers, _usage_of(body))
                _note(response, permit, None)
                return response
            errors = body if len(body) <= _MAX_BODY else b""
            answer = await _report_async(permit, response.status_code, response.headers, None,
                                         errors)
            _note(response, permit, answer)
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    _CLASSES[key] = (SluiceTransport, AsyncSluiceTransport)
    return _CLASSES[key]


def transport(sluice: Client, inner: Any = None, *, http: Any = None, max_wait: float = 60.0,
              on_denied: str = "raise", priority: str = "", rules: Optional[CallRules] = None,
              **rule_options: Any) -> Any:
    """A transport that books every model call on `sluice` before `inner` (default: the
    library's HTTPTransport) sends it. `rule_options` are `CallRules` fields: `service`
    (template or function), `estimate_input`, `default_output`, `providers`."""
    cls, _ = _classes(_module(http))
    return cls(sluice, inner, rules=rules, max_wait=max_wait, on_denied=on_denied,
               priority=priority, **rule_options)


def async_transport(sluice: AsyncClient, inner: Any = None, *, http: Any = None,
                    max_wait: float = 60.0, on_denied: str = "raise", priority: str = "",
                    rules: Optional[CallRules] = None, **rule_options: Any) -> Any:
    """`transport` for asyncio SDK clients, on a `sluice.AsyncClient`."""
    _, cls = _classes(_module(http))
    return cls(sluice, inner, rules=rules, max_wait=max_wait, on_denied=on_denied,
               priority=priority, **rule_options)


def _client_options(mod: Any) -> Dict[str, Any]:
    # The SDKs' own defaults: they set each request's timeout, and follow redirects.
    return {"timeout": mod.Timeout(600.0, connect=5.0), "follow_redirects": True}


def client(sluice: Client, *, http: Any = None, **options: Any) -> Any:
    """An `httpx2.Client` (or `http.Client` of the library given) on `transport(sluice, ...)`:
    pass it to an SDK as `http_client=`."""
    mod = _module(http)
    return mod.Client(transport=transport(sluice, http=mod, **options), **_client_options(mod))


def async_client(sluice: AsyncClient, *, http: Any = None, **options: Any) -> Any:
    """An `httpx2.AsyncClient` on `async_transport(sluice, ...)`: for `AsyncOpenAI`,
    `AsyncAnthropic`."""
    mod = _module(http)
    return mod.AsyncClient(transport=async_transport(sluice, http=mod, **options),
                           **_client_options(mod))
