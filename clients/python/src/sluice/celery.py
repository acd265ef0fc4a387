"""Celery tasks that call rate-limited APIs through Sluice without sleeping in their worker.

    import anthropic
    from celery import Celery
    from sluice.celery import SluiceTask

    app = Celery("jobs", broker="redis://localhost:6379/0")

    @app.task(base=SluiceTask, bind=True)
    def summarize(self, text):
        claude = self.sdk(anthropic.Anthropic)          # on Sluice's transport, one per worker
        reply = claude.messages.create(model="claude-sonnet-4", max_tokens=400,
                                       messages=[{"role": "user", "content": text}])
        return reply.content[0].text

A task waits in its worker for its slot at most `sluice_max_wait` seconds (default 2). When
Sluice has none that soon (a full window, a cooldown), the task is retried with
`countdown = retry_after`, Sluice's exact hint: the worker takes other tasks meanwhile, and
nothing was booked for the denied attempt. A 429 from the provider (which the transport reported,
so every worker of the fleet cools down) retries the task after Sluice's cooldown for the
service. The SDK clients `sdk()` builds do not retry by themselves (`max_retries=0`): Celery's
retries replace them, without blocking a worker.

Calls made without an SDK book their slot with `self.acquire(service, ...)` (same rules; a
`sluice.Denied` it raises retries the task) and report with `permit.report(response)`; a
`sluice.celery.RateLimited(cooldown)` raised by the task retries it after `cooldown`.

These retries count against the task's `max_retries` (100 by default on `SluiceTask`: under
pressure a task may be put back many times, each a short wait).

The seed of this project did the same with a Redis key holding a cooldown; here the slots are
shared reservations inside the provider's real limits, for every worker and process at once.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import celery

from . import http as sluice_http
from ._client import Client, Permit

__all__ = ["SluiceTask", "RateLimited", "countdown_for"]

#: Shortest countdown (seconds): a retry never comes back at once.
MIN_COUNTDOWN = 0.05


class RateLimited(Exception):
    """Raised by a task whose call was answered 429 outside an SDK: retried after `cooldown`."""

    def __init__(self, cooldown: float):
        super().__init__(f"rate limited; retry in {cooldown:.3f}s")
        self.cooldown = cooldown


def _status_of(err: BaseException) -> Optional[int]:
    for holder in (err, getattr(err, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def countdown_for(err: BaseException, default: float) -> Optional[float]:
    """The countdown to retry a task that failed with `err`, or None if `err` is not about rate
    limits: a Sluice denial's `retry_after`; a 429's cooldown as Sluice answered its report
    (else the provider's `retry-after`, else `default`)."""
    denied = sluice_http.denial(err)
    if denied is not None:
        return max(denied.retry_after, MIN_COUNTDOWN)
    if isinstance(err, RateLimited):
        return max(err.cooldown, MIN_COUNTDOWN)
    if _status_of(err) != 429:
        return None
    response = getattr(err, "response", None)
    noted = getattr(response, "extensions", {}).get("sluice") if response is not None else None
    if noted and noted.get("cooldown", 0) > 0:
        return max(float(noted["cooldown"]), MIN_COUNTDOWN)
    headers = getattr(response, "headers", None) or {}
    try:
        return max(float(headers.get("retry-after", default)), MIN_COUNTDOWN)
    except (TypeError, ValueError):
        return default


class SluiceTask(celery.Task):
    """A Celery task base class: `@app.task(base=SluiceTask, bind=True)` (see the module)."""

    #: Sluice's address; None reads $SLUICE_ADDR (default 127.0.0.1:50051).
    sluice_address: Optional[str] = None
    #: Longest wait for a slot inside the worker, in seconds; longer waits retry the task.
    sluice_max_wait: float = 2.0
    #: Countdown after a 429 when neither Sluice nor the provider said how long.
    sluice_default_cooldown: float = 5.0
    #: Options for the SDK transport (`service`, `estimate_input`, `default_output`, ...).
    sluice_transport_options: Dict[str, Any] = {}
    max_retries = 100

    # One client per worker process (created after the fork: gRPC channels do not survive one).
    _clients: Dict[Tuple[int, Optional[str]], Client] = {}
    _sdks: Dict[Tuple[int, Any, Tuple], Any] = {}
    _lock = threading.RLock()

    @property
    def sluice(self) -> Client:
        """This worker process's Sluice client."""
        key = (os.getpid(), self.sluice_address)
        with SluiceTask._lock:
            if key not in SluiceTask._clients:
                SluiceTask._clients[key] = Client(self.sluice_address)
            return SluiceTask._clients[key]

    def sdk(self, factory: Callable[..., Any], **kwargs: Any) -> Any:
        """An SDK client (`openai.OpenAI`, `anthropic.Anthropic`, ... called with `kwargs`) on
        Sluice's transport, without retries of its own; one per worker process and arguments."""
        key = (os.getpid(), factory, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        with SluiceTask._lock:
            if key not in SluiceTask._sdks:
                transport = sluice_http.client(
                    self.sluice, max_wait=self.sluice_max_wait, on_denied="raise",
                    **self.sluice_transport_options)
                kwargs.setdefault("max_retries", 0)
                SluiceTask._sdks[key] = factory(http_client=transport, **kwargs)
            return SluiceTask._sdks[key]

    def acquire(self, service: str, **kwargs: Any) -> Permit:
        """A slot for one call, waiting at most `sluice_max_wait` (a denial retries the task)."""
        kwargs.setdefault("max_wait", self.sluice_max_wait)
        return self.sluice.acquire(service, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except celery.exceptions.Retry:
            raise
        except Exception as err:  # noqa: BLE001 - only rate-limit failures are retried
            countdown = countdown_for(err, self.sluice_default_cooldown)
            if countdown is None:
                raise
            raise self.retry(exc=err, countdown=countdown)

