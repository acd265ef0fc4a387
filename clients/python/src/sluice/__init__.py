"""Sluice's Python client: keep a fleet of workers inside an LLM provider's rate limits.

    import sluice

    with sluice.acquire("openai/gpt-4o", tokens=1200) as permit:
        resp = call_the_api()          # after the slot's wait has been slept
        permit.report(resp)            # status, headers and usage go back to Sluice

`acquire` books a slot (waiting up to `max_wait`), sleeps until it comes, and asks again with the
same request id before returning: a cooldown reported meanwhile moves the slot back. A denial
raises `Denied` with the hint `retry_after`. `permit.report` takes an HTTP response object
(`requests`, `httpx`: anything with `status_code` and `headers`) or explicit values. The asyncio
variant is `AsyncClient` (`async with client.acquire(...) as permit`).

The official SDKs get Sluice without touching their call sites: `sluice.http` gives them an HTTP
transport (`openai.OpenAI(http_client=sluice.http.client(sluice_client))`), and `sluice.celery`
a task base class that retries denied tasks with a countdown instead of sleeping in the worker.

A server configured with `[auth]` tokens needs one: `Client(token=...)` or `SLUICE_TOKEN`; it goes
with every call as `authorization: Bearer <token>`.
"""

from ._client import AsyncClient, AsyncPermit, Client, Denied, Permit, acquire, usage_from_json

__all__ = ["Client", "AsyncClient", "Permit", "AsyncPermit", "Denied", "acquire", "usage_from_json"]
__version__ = "0.1.0"
