"""The Celery app of tests/tests/python_celery.rs: one task that asks the simulated provider for
a chat completion through the openai SDK on Sluice's transport. Every attempt's retry count,
outcome and times go to the Redis list `attempts`, and every retry's countdown (what
`SluiceTask` passed to Celery, with the denial's `retry_after` when it was one) to `countdowns`,
so the test sees how each attempt went and how long each retry was put off.

Environment: BROKER_URL (a redis-server the test started), SLUICE_ADDR, OPENAI_BASE_URL.
"""

import json
import os
import time

import openai
import redis
from celery import Celery

import sluice.http
from sluice.celery import SluiceTask

app = Celery("sluice_test", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
_log = redis.Redis.from_url(os.environ["BROKER_URL"])


class Attempts(SluiceTask):
    sluice_max_wait = 0.5
    sluice_transport_options = {"service": "sim-openai/{model}"}

    def retry(self, *args, exc=None, countdown=None, **kwargs):
        denied = sluice.http.denial(exc) if exc is not None else None
        _log.rpush("countdowns", json.dumps({
            "i": self.request.args[0], "retries": self.request.retries, "countdown": countdown,
            "error": type(exc).__name__, "retry_after": denied.retry_after if denied else None}))
        return super().retry(*args, exc=exc, countdown=countdown, **kwargs)


@app.task(base=Attempts, bind=True)
def ask(self, i):
    started, wall = time.monotonic(), time.time()
    outcome = "ok"
    try:
        client = self.sdk(openai.OpenAI, base_url=os.environ["OPENAI_BASE_URL"], api_key="sk-test")
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": f"task {i}"}])
        reply = raw.parse()
        # How long the transport waited for Sluice's slot, in this worker.
        waited = raw.http_response.extensions["sluice"]["waited"]
        return {"i": i, "retries": self.request.retries, "waited": waited,
                "text": reply.choices[0].message.content}
    except Exception as err:
        outcome = type(err).__name__  # Denied, RateLimitError, ...
        raise
    finally:
        _log.rpush("attempts", json.dumps({"i": i, "retries": self.request.retries, "outcome": outcome,
                                           "seconds": time.monotonic() - started,
                                           "started": wall, "ended": time.time()}))
