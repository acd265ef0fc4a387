"""Runs a real Celery worker (prefork, 8 processes) on celery_app.py, sends it TASKS tasks, and
checks: every task completed; some were denied a slot and retried with a countdown (their
retries count shows it); none waited for its slot in the worker longer than Sluice's in-worker
wait; every retry's countdown was Sluice's: a denial's `retry_after`, a 429's cooldown as Sluice
answered its report (about the service's SERVICE_COOLDOWN seconds, not the task's fallback),
and Celery held each retry back that long. Prints a JSON summary. Run by
tests/tests/python_celery.rs."""

import json
import os
import signal
import subprocess
import sys
import time

import redis

import celery_app
from sluice.celery import MIN_COUNTDOWN

TASKS = int(os.environ.get("TASKS", "16"))
CONCURRENCY = 8
#: The service's `default_cooldown` (seconds): what a 429 that names no time cools it down for.
SERVICE_COOLDOWN = float(os.environ["SERVICE_COOLDOWN"])
#: How far a 429's countdown may fall short of SERVICE_COOLDOWN: the time between Sluice setting
#: the cooldown and answering the report.
COOLDOWN_SLACK = 0.1
#: How much sooner than its countdown Celery may start a retry (its timer's resolution).
EARLY = 0.05


def main() -> None:
    log = redis.Redis.from_url(os.environ["BROKER_URL"])
    log.delete("attempts", "countdowns")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool", "prefork",
         "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=os.path.dirname(os.path.abspath(__file__)), stdout=sys.stderr)
    try:
        results = [celery_app.ask.delay(i) for i in range(TASKS)]
        answers = [r.get(timeout=120) for r in results]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    attempts = [json.loads(a) for a in log.lrange("attempts", 0, -1)]
    countdowns = [json.loads(c) for c in log.lrange("countdowns", 0, -1)]
    assert sorted(a["i"] for a in answers) == list(range(TASKS)), answers
    assert all(a["text"] == "ok" for a in answers), answers
    retried = [a for a in answers if a["retries"] > 0]
    assert retried, f"no task was retried: {answers}"
    # Every attempt but the last of each task was put back (a denial, no call made).
    assert len(attempts) == TASKS + sum(a["retries"] for a in answers), attempts
    assert sum(a["outcome"] == "ok" for a in attempts) == TASKS, attempts
    # No task waited in its worker longer than Sluice's in-worker wait (0.5 s); the 16 tasks on
    # a key of 4 a second would have waited up to 3 s for their slots otherwise. Where the
    # provider answers 429s, a slot already booked moves behind the cooldown one of them sets
    # (the transport asks again before the call and waits the new slot): one cooldown more.
    longest = max(a["waited"] for a in answers)
    bound = celery_app.Attempts.sluice_max_wait
    if os.environ.get("EXPECT_429") == "1":
        bound += float(os.environ.get("SERVICE_COOLDOWN", "0"))
    assert longest <= bound, answers
    limited = sum(a["outcome"] == "RateLimitError" for a in attempts)
    if os.environ.get("EXPECT_429") == "1":
        # The provider's 429s were retried after Sluice's cooldown, and the tasks completed.
        assert limited > 0, attempts
    check_countdowns(attempts, countdowns)
    after_429 = [c["countdown"] for c in countdowns if c["error"] == "RateLimitError"]
    print(json.dumps({"tasks": len(answers), "limited": limited, "retried": len(retried), "attempts": len(attempts),
                      "longest_wait_in_worker_s": round(longest, 3),
                      "longest_attempt_s": round(max(a["seconds"] for a in attempts), 3),
                      "countdowns_after_429_s": [round(c, 3) for c in sorted(after_429)],
                      "longest_countdown_after_denial_s": round(max(
                          (c["countdown"] for c in countdowns if c["error"] == "Denied"), default=0), 3)}))


def check_countdowns(attempts: list, countdowns: list) -> None:
    """Every failed attempt was retried once, with Sluice's countdown, and not started sooner."""
    by_attempt = {(c["i"], c["retries"]): c for c in countdowns}
    assert len(by_attempt) == len(countdowns), countdowns
    failed = [a for a in attempts if a["outcome"] != "ok"]
    assert sorted(by_attempt) == sorted((a["i"], a["retries"]) for a in failed), (failed, countdowns)
    started = {(a["i"], a["retries"]): a["started"] for a in attempts}
    for a in failed:
        c = by_attempt[(a["i"], a["retries"])]
        assert c["error"] == a["outcome"], (a, c)
        if c["error"] == "Denied":
            # Sluice's own hint, as the denial carried it (the shortest countdown aside).
            assert c["retry_after"] > 0, c
            assert abs(c["countdown"] - max(c["retry_after"], MIN_COUNTDOWN)) < 1e-6, c
        elif c["error"] == "RateLimitError":
            # The cooldown Sluice answered the transport's report of the 429 with: the service's
            # default_cooldown (the simulated provider names no time), not the task's fallback
            # (sluice_default_cooldown) that a lost extensions["sluice"] would leave.
            assert SERVICE_COOLDOWN - COOLDOWN_SLACK <= c["countdown"] <= SERVICE_COOLDOWN + 1e-3, c
        else:
            raise AssertionError(f"an attempt failed for another reason: {a}, {c}")
        # Celery held the retry back by its countdown.
        next_start = started[(a["i"], a["retries"] + 1)]
        assert next_start >= a["ended"] + c["countdown"] - EARLY, (a, c, next_start)


if __name__ == "__main__":
    main()
