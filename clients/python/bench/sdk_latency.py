"""What Sluice's transport adds to an SDK call: `sluice-bench sdk-latency` starts a Sluice server
and a simulated OpenAI-style provider on loopback and runs this script, which times the same
chat completion through `openai.OpenAI` built two ways, alternating: a plain httpx2 client, and
`sluice.http.client(...)` (acquire before, report after). Prints one JSON line with the
percentiles of both and the added latency (p50 and p99 with the transport minus without).

Environment: SLUICE_ADDR, OPENAI_BASE_URL, CALLS (default 2000), WARMUP (default 200).
"""

import json
import os
import statistics
import time

import httpx2
import openai

import sluice
import sluice.http

CALLS = int(os.environ.get("CALLS", "2000"))
WARMUP = int(os.environ.get("WARMUP", "200"))


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    base = os.environ["OPENAI_BASE_URL"]
    sc = sluice.Client()
    plain = openai.OpenAI(base_url=base, api_key="sk-bench", max_retries=0,
                          http_client=httpx2.Client())
    booked = openai.OpenAI(base_url=base, api_key="sk-bench", max_retries=0,
                           http_client=sluice.http.client(sc, service="sim-openai/{model}"))
    kwargs = {"model": "gpt-4o-mini", "max_tokens": 16,
              "messages": [{"role": "user", "content": "ping"}]}
    times = {"plain": [], "sluice": []}
    for i in range(WARMUP + CALLS):
        for name, client in (("plain", plain), ("sluice", booked)):
            started = time.perf_counter()
            client.chat.completions.create(**kwargs)
            elapsed = time.perf_counter() - started
            if i >= WARMUP:
                times[name].append(elapsed * 1000)
    out = {"calls": CALLS}
    for name, xs in times.items():
        out[name] = {"p50_ms": round(percentile(xs, 0.5), 3), "p99_ms": round(percentile(xs, 0.99), 3),
                     "mean_ms": round(statistics.fmean(xs), 3)}
    out["added"] = {k: round(out["sluice"][k] - out["plain"][k], 3) for k in ("p50_ms", "p99_ms", "mean_ms")}
    # The parts: one Acquire RPC, one ReportResponse RPC, on their own.
    parts = {"acquire": [], "report": []}
    for _ in range(CALLS):
        started = time.perf_counter()
        permit = sc.acquire("sim-openai/gpt-4o-mini", input_tokens=5, output_tokens=16)
        acquired = time.perf_counter()
        permit.report(200, {"x-ratelimit-remaining-requests": "999"}, (5, 16))
        parts["acquire"].append((acquired - started) * 1000)
        parts["report"].append((time.perf_counter() - acquired) * 1000)
    for name, xs in parts.items():
        out[name] = {"p50_ms": round(percentile(xs, 0.5), 3), "p99_ms": round(percentile(xs, 0.99), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
