"""How the SDK transport answers a denial, through the openai SDK against the simulated provider
(run by tests/tests/sdk_denials.rs). The service `tight` allows one call per minute: the first
goes through; then `on_denied="raise"` makes the SDK call raise `sluice.Denied`, and
`on_denied="429"` answers the SDK a 429 carrying `retry-after-ms`. With the SDKs' own retries on,
"raise" differs by SDK (as sluice/http.py and the README say): openai lets `sluice.Denied` out
at once (one acquire), anthropic wraps it as its connection error and retries it (one acquire
per attempt). Plain `httpx` works as the transport's library too. A request that gets no answer
is abandoned, freeing its in-flight slot. Exits non-zero on a failed check.

Environment: SLUICE_ADDR, OPENAI_BASE_URL.
"""

import os

import anthropic
import httpx
import openai

import sluice
import sluice.http

sc = sluice.Client()
base = os.environ["OPENAI_BASE_URL"]
kwargs = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def sdk(on_denied: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0,
                         http_client=sluice.http.client(sc, service="tight", max_wait=0.1,
                                                        on_denied=on_denied))


# The minute's one call, through plain httpx on the transport.
with httpx.Client(transport=sluice.http.transport(sc, http=httpx, service="tight")) as client:
    answer = client.post(f"{base}/chat/completions", json=kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0
sc.flush()

try:
    sdk("raise").chat.completions.create(**kwargs)
    raise SystemExit("expected a denial")
except sluice.Denied as denied:
    # The current SDK lets it through as it is (older ones wrapped it: denial() finds it).
    assert sluice.http.denial(denied) is denied
    assert 50 < denied.retry_after <= 60, denied.retry_after

try:
    sdk("429").chat.completions.create(**kwargs)
    raise SystemExit("expected a 429")
except openai.RateLimitError as err:
    ms = int(err.response.headers["retry-after-ms"])
    assert 50_000 < ms <= 60_000, ms
    assert err.response.headers["x-sluice-denied"], err.response.headers
    assert sluice.http.denial(err) is None


class Counting(sluice.Client):
    """Counts the acquires the transport makes."""

    acquires = 0

    def acquire(self, *args, **kwargs):
        self.acquires += 1
        return super().acquire(*args, **kwargs)


# on_denied="raise" with the SDKs' retries on (max_retries=2). openai lets `sluice.Denied` through
# on the first attempt (it retries only its HTTP library's errors): one acquire, no backoff.
counting = Counting()
retrying = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=2,
                         http_client=sluice.http.client(counting, service="tight", max_wait=0.1))
try:
    retrying.chat.completions.create(**kwargs)
    raise SystemExit("openai: expected a denial")
except sluice.Denied as denied:
    assert 50 < denied.retry_after <= 60, denied.retry_after
assert counting.acquires == 1, counting.acquires
counting.close()

# anthropic wraps any transport exception as its APIConnectionError and retries it after its
# backoff: each retry acquires again, and the caller sees the denial (as the error's cause) after
# max_retries + 1 acquires.
counting = Counting()
retrying = anthropic.Anthropic(base_url=base, api_key="sk-test", max_retries=2,
                               http_client=sluice.http.client(counting, service="tight",
                                                              max_wait=0.1))
try:
    retrying.messages.create(**kwargs)
    raise SystemExit("anthropic: expected a denial")
except anthropic.APIConnectionError as err:
    denied = sluice.http.denial(err)
    assert denied is not None and 50 < denied.retry_after <= 60, err
assert counting.acquires == 3, counting.acquires
counting.close()

status = sc.status("tight")
assert status.limits[0].used == 1, status

# A request that gets no answer (nothing listens on port 9) is abandoned: the in-flight slot of
# `single` (one call at a time, held for a minute unless reported) is free again at once.
dead = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0,
                     http_client=sluice.http.client(sc, service="single"))
try:
    dead.chat.completions.create(**kwargs)
    raise SystemExit("expected a connection error")
except openai.APIConnectionError:
    pass
assert sc.status("single").limits[0].used == 0, sc.status("single")
with sc.acquire("single", max_wait=0.0):
    pass
print("ok")
