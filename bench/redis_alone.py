#!/usr/bin/env python3
"""The acquire script in Redis alone: what a decision costs Redis with no gRPC, no network wait
and no Sluice server around it (BENCHMARKS.md, section 6.3).

Starts a redis-server on a free port, loads the scripts from server/src/backend/redis as one
function library (the same text scripts.rs builds), and pipes FCALLs of acquire.lua through
`redis-cli --pipe`: 16 acquires per call, either of 16 services picked at random among N (one
acquire each) or of one service (16 acquires), each with a request id, one request limit and one
token limit (sliding windows of 1 s, far above the load), time moving 40,000 decisions a second
(a manual clock, continuous from a warm-up long enough for pruning to run in steady state). Prints
Redis CPU (INFO cpu) and script-called commands (INFO commandstats) per decision.

    python3 bench/redis_alone.py --services 1000
    python3 bench/redis_alone.py --services 1

Standard library only; needs redis-server and redis-cli (7.0 or later) on PATH. Set REDIS_SERVER
to run another build. `--callgrind` runs it under `valgrind --tool=callgrind`, counting only the
measured calls, and prints instructions per decision instead of CPU (exact run to run; a build
with symbols, `make MALLOC=libc CFLAGS=-g`, lets `callgrind_annotate` name the functions).

`--acquire FILE` runs FILE in place of acquire.lua's body, with the same calls: the floors in
bench/redis_floor/ (BENCHMARKS.md, section 6.5) do a grant's Redis commands with no decision.
`--per-call N` sets the acquires per call (16). `--plain` sends each service's grant commands
(`HMGET`, `HSET`, `RPUSH`) as plain commands with no script: Redis's cost of the storage alone.
"""

import argparse
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "server", "src", "backend", "redis")
PRELUDE = ["common.lua", "log.lua", "decide.lua", "reconcile.lua", "upgrade.lua"]
BODIES = ["acquire", "family", "report", "status", "prune", "admin"]
# requests: 10^9 a second; tokens: 10^12 a second (kind 0: sliding window).
LIMITS = "0 0 1000000000 1000000 1000000000 1 1 1 0 1000000000000 1000000 1000000000000 1 1"
PER_CALL = 16
RATE = 40_000


def library(acquire=None):
    """The function library, as scripts.rs builds it (with `acquire`, a file read in place of
    acquire.lua's body)."""
    prelude = "\n".join(open(os.path.join(SCRIPTS, f)).read() for f in PRELUDE)
    code = "local KEYS, ARGV\n" + prelude
    for name in BODIES:
        body = open(os.path.join(SCRIPTS, f"{name}.lua")).read()
        if name == "acquire" and acquire:
            body = open(acquire).read()
        code += f"\nlocal function run_{name}()\n{body}\nend\n"
    lib = "#!lua name=alone\n" + code
    for name in BODIES:
        lib += (f"redis.register_function{{function_name = 'alone_{name}', callback = "
                f"function(keys, args) begin_call(keys, args); return run_{name}() end}}\n")
    return lib


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Clock:
    def __init__(self):
        self.now = 1_800_000_000_000_000


def calls(services, n, clock, rng, per_call=PER_CALL, plain=False):
    """n FCALLs of acquire.lua of per_call acquires each, as RESP; with `plain`, for each service
    of each call the commands of a grant sent as commands, no script: an HMGET of the state and
    request ids, an HSET of a 130-byte state and the request ids, an RPUSH of 113-byte entries."""
    out = []
    for _ in range(n):
        clock.now += per_call * 1_000_000 // RATE
        if services >= per_call:
            groups = [(s, 1) for s in rng.sample(range(services), per_call)]
        else:
            groups = [(0, per_call)]
        keys, args = [], [str(clock.now), str(1 << 20), str(len(groups))]
        for svc, count in groups:
            tag = f"{{alone:bench-{svc}}}"
            keys += [f"{tag}:ledger", f"{tag}:leases", f"{tag}:held"]
            numbers, ids = b"", b""
            for _ in range(count):
                rid = ("%032x" % rng.getrandbits(128)).encode()
                numbers += struct.pack("<dddddddd", 1, 100, 0, 0, 0, 0, 0, -1)
                ids += struct.pack("<H", len(rid)) + rid
            packed = numbers + ids
            args += [LIMITS, "1000000", "%016x" % rng.getrandbits(64), str(count), packed]
            if plain:
                rids = [ids[i + 2:i + 2 + 32] for i in range(0, len(ids), 34)]
                entries = [struct.pack("<ddddH", 7, clock.now, clock.now, 0, len(r)) + r
                           + struct.pack("<dddddH", 1, 100, 7, 700, 0, 1) + b"n" for r in rids]
                out.append(resp(["HMGET", keys[-3], "", *rids]))
                out.append(resp(["HSET", keys[-3], "", b"s" * 130,
                                 *[x for r in rids for x in (r, b"7")]]))
                out.append(resp(["RPUSH", keys[-2], *entries]))
        if not plain:
            out.append(resp(["FCALL", "alone_acquire", len(keys), *keys, *args]))
    return b"".join(out)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cli(port, *args, data=None):
    return subprocess.run(["redis-cli", "-p", str(port), *args], input=data, capture_output=True,
                          check=True).stdout


def counters(port):
    cpu, calls = 0.0, {}
    for line in cli(port, "INFO", "all").decode().splitlines():
        if line.startswith(("used_cpu_user:", "used_cpu_sys:")):
            cpu += float(line.split(":")[1])
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
    return cpu, calls


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--calls", type=int, default=8000, help="measured FCALLs")
    p.add_argument("--warmup", type=int, default=4000, help="FCALLs before measuring")
    p.add_argument("--callgrind", metavar="OUT", help="count instructions under callgrind into OUT")
    p.add_argument("--acquire", metavar="FILE", help="a script body to run in acquire.lua's place")
    p.add_argument("--per-call", type=int, default=PER_CALL, help="acquires per call")
    p.add_argument("--plain", action="store_true",
                   help="send a grant's commands themselves, no script (what a module would do)")
    p.add_argument("--cache-sim", action="store_true",
                   help="with --callgrind: simulate the caches too and estimate cycles")
    a = p.parse_args()
    port, tmp = free_port(), tempfile.mkdtemp()
    command = [os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(port), "--save", "",
               "--appendonly", "no", "--dir", tmp]
    if a.callgrind:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={os.path.abspath(a.callgrind)}",
                   *(["--cache-sim=yes", *os.environ.get("CACHE_SIM_ARGS", "").split()] if a.cache_sim else []), *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                cli(port, "PING")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.05)
        cli(port, "-x", "FUNCTION", "LOAD", "REPLACE", data=library(a.acquire).encode())
        clock, rng = Clock(), random.Random(1)
        cli(port, "--pipe", data=calls(a.services, a.warmup, clock, rng, a.per_call, a.plain))
        load = calls(a.services, a.calls, clock, rng, a.per_call, a.plain)
        cpu0, calls0 = counters(port)
        if a.callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True,
                           capture_output=True)
        out = cli(port, "--pipe", data=load).decode()
        if a.callgrind:
            subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True,
                           capture_output=True)
        cpu1, calls1 = counters(port)
        decisions = a.calls * a.per_call
        per = {k: (v - calls0.get(k, 0)) / decisions for k, v in calls1.items()
               if k != "info" and v - calls0.get(k, 0) > 0}
        print(f"redis alone, {a.services} services, {a.per_call} acquires per call: "
              f"{(cpu1 - cpu0) * 1e6 / decisions:.2f} us CPU per decision, "
              f"{sum(per.values()):.2f} commands per decision "
              f"({', '.join(f'{k} {v:.2f}' for k, v in sorted(per.items(), key=lambda x: -x[1]))})")
        if a.callgrind:
            server.terminate()
            server.wait()
            lines = open(a.callgrind).read().splitlines()
            events = next(line.split()[1:] for line in lines if line.startswith("events:"))
            values = next([int(x) for x in line.split()[1:]] for line in lines
                          if line.startswith("totals:"))
            totals = dict(zip(events, values))
            print(f"callgrind: {totals['Ir'] / decisions:,.0f} instructions per decision "
                  f"({a.callgrind})")
            if a.cache_sim:
                # Cycles as callgrind_annotate estimates them: 1 per instruction, 10 per
                # first-level miss, 100 per last-level miss.
                l1 = totals["I1mr"] + totals["D1mr"] + totals["D1mw"]
                ll = totals["ILmr"] + totals["DLmr"] + totals["DLmw"]
                cycles = totals["Ir"] + 10 * l1 + 100 * ll
                print(f"callgrind: {l1 / decisions:,.0f} L1 and {ll / decisions:,.0f} last-level "
                      f"misses per decision, about {cycles / decisions:,.0f} cycles")
        if "errors: 0" not in out:
            sys.exit(f"the script answered errors: {out.strip()}")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
