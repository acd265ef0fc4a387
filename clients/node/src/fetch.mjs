// Sluice under the official Node SDKs: a `fetch` that `openai` and `@anthropic-ai/sdk` take as
// their `fetch` option (any client built on fetch does).
//
//   import OpenAI from "openai";
//   import { Client, sluiceFetch } from "sluice-client";
//   const sluice = new Client();
//   const openai = new OpenAI({ fetch: sluiceFetch(sluice) });
//
// Every model call the SDK sends, its own retries included, is acquired first (service and cost
// from the request, see calls.mjs), waiting up to `maxWait` seconds for its slot; the answer is
// reported with its status, rate-limit headers and usage (the JSON body's, or a streamed answer's
// usage events as the SDK reads the stream). A request that gets no answer (a network error, an
// abort) is abandoned: its in-flight slot is freed at once. A streamed answer that breaks
// mid-body (after its 2xx status) is reported, not abandoned: with its status and the usage its
// events carried so far, if any; that frees its in-flight slot too. Requests that are not model
// calls pass through untouched.
//
// With no slot within `maxWait` it either throws `Denied` (`onDenied: "throw"`, the default; the
// SDKs wrap it as their connection error, whose `cause` it is) or answers the SDK a 429 carrying
// `retry-after-ms` (`onDenied: "429"`), so the SDK's own backoff waits and retries.
//
// "throw" and the SDKs' own retries: openai and @anthropic-ai/sdk retry every rejected fetch as a
// connection error, `maxRetries` times (default 2) after their own backoff (about 0.5 s, then
// 1 s, ..., not Sluice's retry_after), and each retry acquires again. So a denial reaches the
// caller only after maxRetries + 1 acquires, up to (maxRetries + 1) x maxWait when the acquires
// wait (in-flight slots), plus the backoff. For one acquire and the denial at once, build the SDK
// with `maxRetries: 0`; for retries paced by Sluice, use `onDenied: "429"`.

import { Denied, usageFromJson } from "./client.mjs";
import { readCall, SseUsage } from "./calls.mjs";

const MAX_ERROR_BODY = 64 * 1024;

function requestParts(input, init) {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  const method = init?.method ?? (typeof input === "object" && "method" in input ? input.method : "GET");
  const body = typeof init?.body === "string" ? init.body : "";
  return { url, method, body };
}

function deniedResponse(denied) {
  const ms = Math.max(1, Math.ceil(denied.retryAfter * 1000));
  const body = { error: { message: `sluice: ${denied.message}`, type: "sluice_denied", code: "rate_limit_exceeded" } };
  return new Response(JSON.stringify(body), {
    status: 429,
    headers: {
      "retry-after-ms": String(ms),
      "retry-after": String(Math.ceil(ms / 1000)),
      "x-sluice-denied": denied.reason,
      "content-type": "application/json",
    },
  });
}

async function report(permit, status, headers, usage, body) {
  try {
    return await permit.report(status, headers, usage, body);
  } catch (err) {
    console.warn(`sluice: report of ${permit.service} failed: ${err.message}`);
    return null;
  }
}

/** A body that passes `response`'s stream through, reading usage events, reported at its end. */
function watched(response, permit) {
  const sse = new SseUsage();
  const reader = response.body.getReader();
  let done = false;
  const finish = () => {
    if (done) return Promise.resolve();
    done = true;
    return report(permit, response.status, response.headers, sse.usage());
  };
  const body = new ReadableStream({
    async pull(controller) {
      try {
        const { value, done: end } = await reader.read();
        if (end) {
          await finish();
          controller.close();
          return;
        }
        sse.feed(value);
        controller.enqueue(value);
      } catch (err) {
        await finish();
        controller.error(err);
      }
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => {});
      await finish();
    },
  });
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
}

/**
 * A fetch that books every model call on `client` (a Sluice `Client`) before `fetch` (default:
 * the global one) sends it. Options: `service` (template or function), `estimateInput`,
 * `defaultOutput`, `providers` (see calls.mjs), `maxWait` (seconds, 60), `onDenied` ("throw" or
 * "429"), `priority`, `fetch`.
 */
export function sluiceFetch(client, options = {}) {
  const { maxWait = 60, onDenied = "throw", priority = "", fetch: inner = globalThis.fetch, ...rules } = options;
  if (onDenied !== "throw" && onDenied !== "429") throw new TypeError(`onDenied must be "throw" or "429", not ${onDenied}`);
  return async function fetchWithSluice(input, init) {
    const call = readCall(requestParts(input, init), rules);
    if (call === null) return inner(input, init);
    let permit;
    try {
      permit = await client.acquire(call.service, {
        inputTokens: call.inputTokens, outputTokens: call.outputTokens, maxWait, priority,
      });
    } catch (err) {
      if (err instanceof Denied && onDenied === "429") return deniedResponse(err);
      throw err;
    }
    let response;
    try {
      response = await inner(input, init);
    } catch (err) {
      await permit.abandon().catch(() => {});
      throw err;
    }
    const kind = response.headers.get("content-type") ?? "";
    if (response.ok && kind.startsWith("text/event-stream") && response.body) return watched(response, permit);
    const bytes = new Uint8Array(await response.clone().arrayBuffer());
    let usage = null;
    if (response.ok) {
      try {
        usage = usageFromJson(JSON.parse(new TextDecoder().decode(bytes)));
      } catch {
        usage = null;
      }
    }
    const errors = response.status >= 400 && bytes.length <= MAX_ERROR_BODY ? bytes : undefined;
    await report(permit, response.status, response.headers, usage, errors);
    return response;
  };
}
