"""Drives a running Sluice server from Python, as a worker would: run by tests/tests/python.rs
against a real server (SLUICE_ADDR), with the config that test writes (services `llm`, `slow`,
`pool`).
Exits non-zero on the first failed check."""

import asyncio
import json
import os
import sys
import threading
import time


import grpc  # noqa: E402
import sluice  # noqa: E402


class Response:
    """What `requests` or `httpx` hand back, as far as Sluice reads it."""

    def __init__(self, status_code, headers, body):
        self.status_code = status_code
        self.headers = headers
        self.content = json.dumps(body).encode()


def sync_worker(client: sluice.Client) -> None:
    # A plain call: acquire, call, report with the usage read from the body.
    with client.acquire("llm", tokens=1200) as permit:
        resp = Response(200, {"x-ratelimit-remaining-tokens": "99000", "content-type": "json"},
                        {"usage": {"prompt_tokens": 700, "completion_tokens": 300}})
        answer = permit.report(resp)
    assert permit.reported
    assert "usage applied" in answer.detail, answer.detail

    # The next slot of `slow` (1 per second) is a second after the last: slept until it comes.
    client.acquire("slow", max_wait=5)
    started = time.monotonic()
    permit = client.acquire("slow", max_wait=5)
    waited = time.monotonic() - started
    assert permit.wait > 0 and waited >= permit.wait, (waited, permit.wait)
    assert permit.limit == "requests/1s", permit

    # A priority class is named per call; an unknown one is refused.
    with client.acquire("llm", tokens=10, priority="interactive") as permit:
        permit.report(200)
    try:
        client.acquire("llm", tokens=10, priority="urgent")
        raise AssertionError("an unknown priority class was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e

    # A call that fails inside the block gives its in-flight slot (one in `pool`) back at once;
    # without that, the next call would wait for the ten-minute lease timeout.
    try:
        with client.acquire("pool", max_wait=0):
            raise ConnectionResetError("upstream connection reset")
    except ConnectionResetError:
        pass
    with client.acquire("pool", max_wait=0) as permit:
        answer = permit.report(200)
    assert "slot released" in answer.detail, answer.detail
    # While the slot is held, a worker that may wait asks again until a report frees it.
    holder = client.acquire("pool", max_wait=0)
    try:
        client.acquire("pool", max_wait=0)
        raise AssertionError("two calls in flight in a pool of one")
    except sluice.Denied as denied:
        assert denied.reason == "IN_FLIGHT", vars(denied)
    threading.Timer(0.2, holder.report, args=(200,)).start()
    with client.acquire("pool", max_wait=30) as permit:
        assert permit.wait > 0, permit.wait
        permit.report(200)

    # One worker's 429 cools the service down for everyone...
    with client.acquire("llm", tokens=10) as permit:
        answer = permit.report(429, {"retry-after": "30"})
    assert answer.cooldown_set, answer
    status = client.status("llm")
    assert status.cooldown.cause == "429 retry-after", status
    assert status.cooldown.remaining.seconds > 20, status
    # ... so a try-acquire is refused with the reason and a hint.
    try:
        client.acquire("llm", tokens=10, max_wait=0)
        raise AssertionError("granted during a cooldown")
    except sluice.Denied as denied:
        assert denied.reason == "COOLDOWN" and denied.retry_after > 20, vars(denied)


async def async_worker(target: str) -> None:
    client = sluice.AsyncClient(target)
    await client.acquire("slow", max_wait=5)
    async with client.acquire("slow", max_wait=5) as permit:
        answer = await permit.report(200, {"x-ratelimit-remaining-requests": "0",
                                           "x-ratelimit-reset-requests": "1"})
    assert permit.lease_id and permit.wait > 0, permit
    assert "remaining" in answer.detail or answer.cooldown_set, answer
    status = await client.status("slow")
    assert status.service == "slow" and status.last_report.status_code == 200, status
    # Leaving the block unreported frees the in-flight slot, under asyncio too.
    try:
        async with client.acquire("pool", max_wait=0):
            raise ConnectionResetError("upstream connection reset")
    except ConnectionResetError:
        pass
    async with client.acquire("pool", max_wait=0) as permit:
        await permit.abandon()
    await streamed_report_outlives_the_readers_cancellation(client)
    await client.close()


async def streamed_report_outlives_the_readers_cancellation(client: "sluice.AsyncClient") -> None:
    """The SDK transport reports a streamed answer when the stream ends, and the SDK may be
    cancelled right then (openai drains a finished stream under a 0.1 s timeout): the report must
    still arrive. Here the reader cancels itself on the last chunk; the report frees `pool`."""
    import httpx2

    import sluice.http

    events = b'data: {"choices": []}\n\ndata: [DONE]\n\n'
    provider = httpx2.MockTransport(lambda request: httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, content=events))
    transport = sluice.http.async_transport(client, provider, service="pool", max_wait=0)
    request = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions",
                             json={"model": "gpt-4o", "stream": True, "messages": []})
    response = await transport.handle_async_request(request)

    async def read_then_cancel() -> bytes:
        body = b""
        async for chunk in response.stream:
            body += chunk
            if body == events:
                asyncio.current_task().cancel()  # lands on the next await: the stream's end
        return body

    try:
        await asyncio.create_task(read_then_cancel())
    except asyncio.CancelledError:
        pass
    await client.flush()
    async with client.acquire("pool", max_wait=0) as permit:  # Denied if the report was lost
        await permit.abandon()


def main() -> None:
    target = os.environ["SLUICE_ADDR"]
    client = sluice.Client(target, client_id="python-test")
    sync_worker(client)
    asyncio.run(async_worker(target))
    # The module-level helper uses $SLUICE_ADDR.
    try:
        sluice.acquire("llm", max_wait=0)
        raise AssertionError("granted during a cooldown")
    except sluice.Denied:
        pass
    print("python worker: ok")


if __name__ == "__main__":
    main()
