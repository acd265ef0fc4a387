// The gRPC client of Sluice for Node: `Client`, its `Permit`s, `Denied`.
//
//   import { Client } from "sluice-client";
//   const sluice = new Client(process.env.SLUICE_ADDR ?? "127.0.0.1:50051");
//   await sluice.withPermit("openai/gpt-4o", { tokens: 1200 }, async (permit) => {
//     const resp = await fetch(url, init);      // after the slot's wait has been slept
//     await permit.report(resp);                // status, rate-limit headers, usage
//   });
//
// `acquire` books a slot (waiting up to `maxWait` seconds), sleeps until it comes, and asks again
// with the same request id before resolving: a cooldown reported meanwhile moves the slot back.
// While every in-flight slot of a `concurrent` limit is held (reason IN_FLIGHT) it asks again,
// backing off from 20 ms to 250 ms, within `maxWait`. `withPermit` reports a call that ends
// without a report (an exception) as abandoned, freeing its in-flight slot at once.
// A denial rejects with `Denied` (`retryAfter` seconds, `reason`, `limit`). The API is loaded
// at runtime with @grpc/proto-loader from the proto shipped in the package: nothing generated.

import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));
// The API, shipped with the package (a copy of the repository's proto/, checked by a test).
const PROTO = path.join(HERE, "..", "proto", "sluice", "v1", "sluice.proto");
const RETRIES = [50, 250];
const MAX_RECHECKS = 64; // a lower-priority slot may move back once per overtake
const IN_FLIGHT_POLL = [0.02, 0.25];
const RATE_LIMIT_PREFIXES = ["x-ratelimit-", "anthropic-ratelimit-", "ratelimit", "retry-after", "x-ms-retry-after"];

const definition = protoLoader.loadSync(PROTO, {
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const { RateLimiter } = grpc.loadPackageDefinition(definition).sluice.v1;

/** No slot within maxWait. */
export class Denied extends Error {
  constructor(retryAfter, reason, limit) {
    super(`denied by ${limit || reason}; retry after ${retryAfter.toFixed(3)}s`);
    this.name = "Denied";
    this.retryAfter = retryAfter;
    this.reason = reason;
    this.limit = limit;
  }
}

const toDuration = (s) => ({ seconds: Math.floor(s), nanos: Math.round((s % 1) * 1e9) });
const fromDuration = (d) => (d ? Number(d.seconds) + d.nanos / 1e9 : 0);
const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, (err, answer) => (err ? reject(err) : resolve(answer)));
  });
}

/** The rate-limit headers of a Headers object, a plain object or [name, value] pairs. */
function rateLimitHeaders(headers) {
  if (!headers) return [];
  const pairs = typeof headers.entries === "function" ? [...headers.entries()] : Object.entries(headers);
  return pairs
    .filter(([name]) => RATE_LIMIT_PREFIXES.some((p) => name.toLowerCase().startsWith(p)))
    .slice(0, 100)
    .map(([name, value]) => ({ name, value: String(value) }));
}

/** [input, output] tokens from an OpenAI, Anthropic or Gemini JSON body, or null. */
export function usageFromJson(body) {
  const u = body?.usage;
  if (u && "prompt_tokens" in u) return [u.prompt_tokens ?? 0, u.completion_tokens ?? 0];
  if (u && "input_tokens" in u) return [u.input_tokens + (u.cache_creation_input_tokens ?? 0), u.output_tokens ?? 0];
  const m = body?.usageMetadata;
  if (m && "promptTokenCount" in m) return [m.promptTokenCount, m.candidatesTokenCount ?? 0];
  return null;
}

/** A booked slot. */
export class Permit {
  constructor(client, service, answer, waited) {
    this.client = client;
    this.service = service;
    this.leaseId = answer.lease_id;
    this.limit = answer.limit;
    this.wait = waited;
    this.reported = false;
  }

  /**
   * Reports the provider's answer: a fetch Response (its body is read for usage when it is JSON
   * and not yet used), or a status, headers and optional [input, output] usage.
   */
  async report(status, headers, usage, body) {
    if (typeof status === "object" && status !== null && "status" in status) {
      const response = status;
      status = response.status;
      headers = headers ?? response.headers;
      if (usage === undefined && !response.bodyUsed && typeof response.clone === "function") {
        usage = usageFromJson(await response.clone().json().catch(() => null));
      }
    }
    const request = {
      service: this.service,
      lease_id: this.leaseId,
      status_code: status,
      headers: rateLimitHeaders(headers),
    };
    if (usage) request.usage = { input_tokens: usage[0], output_tokens: usage[1] };
    // An error's body tells quota from rate limits; bodies over 64 KiB are not sent.
    if (body && body.length <= 64 * 1024) request.body = Buffer.from(body);
    return this.#send(request);
  }

  /** Reports that the call got no answer: its in-flight slot is released, nothing else. */
  async abandon() {
    return this.#send({ service: this.service, lease_id: this.leaseId, status_code: 0, headers: [] });
  }

  async #send(request) {
    this.reported = true;
    const answer = await call(this.client.stub, "ReportResponse", request);
    return { cooldown: fromDuration(answer.cooldown), cooldownSet: answer.cooldown_set, detail: answer.detail };
  }
}

export class Client {
  constructor(target = process.env.SLUICE_ADDR ?? "127.0.0.1:50051", clientId = "") {
    this.stub = new RateLimiter(target, grpc.credentials.createInsecure());
    this.clientId = clientId;
  }

  async #send(request) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call(this.stub, "Acquire", request);
      } catch (err) {
        if (err.code !== grpc.status.UNAVAILABLE || attempt >= RETRIES.length) throw err;
        await sleep(RETRIES[attempt] / 1000);
      }
    }
  }

  /** Books a slot and sleeps until it comes; rejects with Denied if none within maxWait. */
  async acquire(service, { tokens = 0, inputTokens = 0, outputTokens = 0, maxWait = 60, requestId, priority = "" } = {}) {
    const request = {
      service, tokens, input_tokens: inputTokens, output_tokens: outputTokens,
      max_wait: toDuration(maxWait), request_id: requestId ?? randomUUID(), client_id: this.clientId,
      priority,
    };
    const started = performance.now() / 1000;
    let answer = await this.#send(request);
    // Every in-flight slot held: ask again, backing off, until a report frees one.
    let pause = IN_FLIGHT_POLL[0];
    for (;;) {
      const left = maxWait - (performance.now() / 1000 - started);
      if (answer.granted || answer.reason !== "IN_FLIGHT" || left <= 0) break;
      await sleep(Math.min(pause, left, fromDuration(answer.retry_after)));
      pause = Math.min(pause * 2, IN_FLIGHT_POLL[1]);
      request.max_wait = toDuration(Math.max(0, maxWait - (performance.now() / 1000 - started)));
      answer = await this.#send(request);
    }
    let waited = pause > IN_FLIGHT_POLL[0] ? performance.now() / 1000 - started : 0;
    for (let i = 0; i < MAX_RECHECKS && answer.granted; i++) {
      const wait = fromDuration(answer.wait);
      if (wait <= 0) break;
      await sleep(wait);
      waited += wait;
      answer = await this.#send(request); // same request id: same lease, current slot
    }
    if (answer.granted && fromDuration(answer.wait) > 0) {
      // Out of re-asks: sleep the last wait.
      await sleep(fromDuration(answer.wait));
      waited += fromDuration(answer.wait);
    }
    if (!answer.granted) throw new Denied(fromDuration(answer.retry_after), answer.reason, answer.limit);
    return new Permit(this, service, answer, waited);
  }

  /**
   * Acquires, runs `work(permit)`, and returns its result: the context-manager shape. A call that
   * ends without a report (an exception) is reported abandoned.
   */
  async withPermit(service, options, work) {
    const permit = await this.acquire(service, options);
    try {
      return await work(permit);
    } finally {
      if (!permit.reported) await permit.abandon().catch(() => {});
    }
  }

  /** The service's live state (GetStatus). */
  async status(service) {
    return (await call(this.stub, "GetStatus", { service })).status;
  }

  close() {
    this.stub.close();
  }
}
