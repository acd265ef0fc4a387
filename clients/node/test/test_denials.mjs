// How `sluiceFetch` answers a denial, through the openai SDK against the simulated provider (run
// by tests/tests/sdk_denials.rs, after the Python twin used the minute's one call of `tight`):
// `onDenied: "throw"` makes the SDK reject with its connection error, `Denied` as its cause;
// `onDenied: "429"` answers the SDK a 429 carrying `retry-after-ms`. Unlike Python's openai, the
// Node SDKs (openai and @anthropic-ai/sdk) retry a rejected fetch: with their retries on, a
// "throw" denial is asked again maxRetries times, after their backoff, before it reaches the
// caller. A request that gets no answer is abandoned, freeing its in-flight slot. Exits non-zero
// on a failed check. Environment: SLUICE_ADDR, OPENAI_BASE_URL.

import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { Client, Denied, sluiceFetch } from "../src/index.mjs";

const sluice = new Client(process.env.SLUICE_ADDR);
const sdk = (onDenied) => new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL, apiKey: "sk-test", maxRetries: 0,
  fetch: sluiceFetch(sluice, { service: "tight", maxWait: 0.1, onDenied }),
});
const call = { model: "gpt-4o-mini", max_tokens: 8, messages: [{ role: "user", content: "hi" }] };

await assert.rejects(sdk("throw").chat.completions.create(call), (err) => {
  assert.ok(err instanceof OpenAI.APIConnectionError, String(err));
  assert.ok(err.cause instanceof Denied, String(err.cause));
  assert.ok(err.cause.retryAfter > 50 && err.cause.retryAfter <= 60, String(err.cause.retryAfter));
  return true;
});

await assert.rejects(sdk("429").chat.completions.create(call), (err) => {
  assert.ok(err instanceof OpenAI.RateLimitError, String(err));
  const ms = Number(err.headers.get("retry-after-ms"));
  assert.ok(ms > 50_000 && ms <= 60_000, String(ms));
  assert.ok(err.headers.get("x-sluice-denied"));
  return true;
});

// `onDenied: "throw"` with the SDKs' default retries (2): the SDK takes the rejection for a
// connection error and retries it after its own backoff, acquiring again each time; the caller
// sees the denial after maxRetries + 1 acquires (README and fetch.mjs say so).
const claudeCall = { model: "claude-x", max_tokens: 8, messages: [{ role: "user", content: "hi" }] };
for (const [name, make, send] of [
  ["openai", (fetch) => new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: "sk-test", maxRetries: 2, fetch }),
    (sdk) => sdk.chat.completions.create(call)],
  ["anthropic", (fetch) => new Anthropic({ baseURL: process.env.OPENAI_BASE_URL, apiKey: "sk-test", maxRetries: 2, fetch }),
    (sdk) => sdk.messages.create(claudeCall)],
]) {
  let acquires = 0;
  const counting = { acquire: (...args) => { acquires += 1; return sluice.acquire(...args); } };
  const sdk = make(sluiceFetch(counting, { service: "tight", maxWait: 0.1, onDenied: "throw" }));
  await assert.rejects(send(sdk), (err) => {
    assert.ok(err.cause instanceof Denied, `${name}: ${err} (cause ${err.cause})`);
    return true;
  });
  assert.equal(acquires, 3, `${name}: one acquire, then one per SDK retry`);
}

const status = await sluice.status("tight");
assert.equal(Number(status.limits[0].used), 1);

// A request that gets no answer (nothing listens on port 9) is abandoned: the in-flight slot of
// `single` (one call at a time, held for a minute unless reported) is free again at once.
const dead = new OpenAI({
  baseURL: "http://127.0.0.1:9/v1", apiKey: "sk-test", maxRetries: 0,
  fetch: sluiceFetch(sluice, { service: "single" }),
});
await assert.rejects(dead.chat.completions.create(call), (err) => {
  assert.ok(err instanceof OpenAI.APIConnectionError, String(err));
  assert.ok(!(err.cause instanceof Denied), String(err.cause));
  return true;
});
assert.equal(Number((await sluice.status("single")).limits[0].used), 0);
const permit = await sluice.acquire("single", { maxWait: 0 });
await permit.abandon();
sluice.close();
console.log("ok");
