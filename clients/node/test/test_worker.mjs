// Drives a running Sluice server from Node, as a worker would: run by tests/tests/node.rs against
// a real server (SLUICE_ADDR), with the config that test writes (services `llm`, `slow`, `pool`). Exits
// non-zero on the first failed check.

import assert from "node:assert/strict";
import { Client, Denied } from "../src/index.mjs";

const sluice = new Client(process.env.SLUICE_ADDR, "node-test");

// A plain call: acquire, call, report a fetch-like Response with usage in its body.
const body = { usage: { prompt_tokens: 700, completion_tokens: 300 } };
const answer = await sluice.withPermit("llm", { tokens: 1200 }, async (permit) => {
  const resp = new Response(JSON.stringify(body), {
    status: 200,
    headers: { "x-ratelimit-remaining-tokens": "99000", "content-type": "application/json" },
  });
  return permit.report(resp);
});
assert.match(answer.detail, /usage applied/);

// The next slot of `slow` (1 per second) is a second after the last: slept until it comes.
await sluice.acquire("slow", { maxWait: 5 });
const started = performance.now();
const slow = await sluice.acquire("slow", { maxWait: 5 });
assert.ok(slow.wait > 0 && (performance.now() - started) / 1000 >= slow.wait - 0.01, `${slow.wait}`);
assert.equal(slow.limit, "requests/1s");

// A priority class is named per call; an unknown one is refused (INVALID_ARGUMENT).
const urgent = await sluice.acquire("llm", { tokens: 10, priority: "interactive" });
await urgent.report(200);
await assert.rejects(sluice.acquire("llm", { priority: "urgent" }), (err) => err.code === 3);

// A call that throws inside withPermit gives its in-flight slot (one in `pool`) back at once.
await assert.rejects(
  sluice.withPermit("pool", { maxWait: 0 }, async () => {
    throw new Error("upstream connection reset");
  }),
  /connection reset/,
);
const holder = await sluice.acquire("pool", { maxWait: 0 });
await assert.rejects(sluice.acquire("pool", { maxWait: 0 }), (err) => err.reason === "IN_FLIGHT");
// While it is held, a worker that may wait asks again until a report frees it.
setTimeout(() => holder.report(200), 200);
const next = await sluice.acquire("pool", { maxWait: 30 });
assert.ok(next.wait > 0, `${next.wait}`);
assert.match((await next.abandon()).detail, /slot released/);

// One worker's 429 cools the service down for everyone...
const limited = await sluice.withPermit("llm", { tokens: 10 }, (permit) =>
  permit.report(429, { "retry-after": "30" }),
);
assert.ok(limited.cooldownSet);
const status = await sluice.status("llm");
assert.equal(status.cooldown.cause, "429 retry-after");
assert.ok(Number(status.cooldown.remaining.seconds) > 20);

// ... so a try-acquire is refused with the reason and a hint.
await assert.rejects(sluice.acquire("llm", { maxWait: 0 }), (err) => {
  assert.ok(err instanceof Denied);
  assert.equal(err.reason, "COOLDOWN");
  assert.ok(err.retryAfter > 20);
  return true;
});

sluice.close();
console.log("node worker: ok");
