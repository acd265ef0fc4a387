"""Runs a real Celery worker (prefork, 8 processes) on celery_app.py, sends it TASKS tasks, and
checks: every task completed; some were denied a slot and retried with a countdown (their
retries count shows it); none waited for its slot in the worker longer than Sluice's in-worker
wait. Prints a JSON summary. Run by tests/tests/python_celery.rs."""

import json
import os
import signal
import subprocess
import sys
import time

import redis

import celery_app

TASKS = int(os.environ.get("TASKS", "16"))
CONCURRENCY = 8


def main() -> None:
    log = redis.Redis.from_url(os.environ["BROKER_URL"])
    log.delete("attempts")
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
    assert sorted(a["i"] for a in answers) == list(range(TASKS)), answers
    assert all(a["text"] == "ok" for a in answers), answers
    retried = [a for a in answers if a["retries"] > 0]
    assert retried, f"no task was retried: {answers}"
    # Every attempt but the last of each task was put back (a denial, no call made).
    assert len(attempts) == TASKS + sum(a["retries"] for a in answers), attempts
    assert sum(a["outcome"] == "ok" for a in attempts) == TASKS, attempts
    # No task waited in its worker longer than Sluice's in-worker wait (0.5 s); the 16 tasks on
    # a key of 4 a second would have waited up to 3 s for their slots otherwise.
    longest = max(a["waited"] for a in answers)
    assert longest <= celery_app.Attempts.sluice_max_wait, answers
    limited = sum(a["outcome"] == "RateLimitError" for a in attempts)
    if os.environ.get("EXPECT_429") == "1":
        # The provider's 429s were retried after Sluice's cooldown, and the tasks completed.
        assert limited > 0, attempts
    print(json.dumps({"tasks": len(answers), "limited": limited, "retried": len(retried), "attempts": len(attempts),
                      "longest_wait_in_worker_s": round(longest, 3),
                      "longest_attempt_s": round(max(a["seconds"] for a in attempts), 3)}))


if __name__ == "__main__":
    main()
