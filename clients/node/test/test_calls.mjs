// The rules that read an API call from its request (calls.mjs): the same checks as the Python
// twin, clients/python/tests/test_calls.py. Run by tests/tests/node.rs.

import assert from "node:assert/strict";
import { readCall, SseUsage } from "../src/index.mjs";

const read = (rules, url, body, method = "POST") =>
  readCall({ method, url, body: body === null ? "" : JSON.stringify(body) }, rules);
const brief = (c) => [c.service, c.inputTokens, c.outputTokens];

const chat = { model: "gpt-4o", max_tokens: 100, messages: [{ role: "user", content: "hello world!" }] };
assert.deepEqual(brief(read({}, "https://api.openai.com/v1/chat/completions", chat)), ["openai/gpt-4o", 7, 100]);
const claude = { model: "claude-x", max_tokens: 1000, system: "be brief", messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }] };
assert.deepEqual(brief(read({}, "https://api.anthropic.com/v1/messages", claude)), ["anthropic/claude-x", 7, 1000]);
const gemini = { contents: [{ parts: [{ text: "abcdefgh" }] }], generationConfig: { maxOutputTokens: 50 } };
assert.deepEqual(brief(read({}, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent", gemini)), ["gemini/gemini-2.0-flash", 6, 50]);
// Output ceilings: OpenAI's max_completion_tokens (it wins over a max_tokens beside it) and the
// Responses API's max_output_tokens.
const reasoning = { model: "o3-mini", max_completion_tokens: 64, messages: [{ role: "user", content: "hello world!" }] };
assert.deepEqual(brief(read({}, "https://api.openai.com/v1/chat/completions", reasoning)), ["openai/o3-mini", 7, 64]);
assert.equal(read({}, "https://api.openai.com/v1/chat/completions", { ...reasoning, max_tokens: 100 }).outputTokens, 64);
const responses = { model: "gpt-4o", instructions: "be brief", max_output_tokens: 80, input: [{ role: "user", content: "hello world!" }] };
assert.deepEqual(brief(read({}, "https://api.openai.com/v1/responses", responses)), ["openai/gpt-4o", 9, 80]);
const azure = read({}, "https://acme.openai.azure.com/openai/deployments/x/chat/completions", { model: "gpt-4o", messages: [] });
assert.deepEqual([azure.service, azure.outputTokens], ["azure/gpt-4o", 1024]);
assert.equal(read({}, "https://api.openai.com/v1/models", null, "GET"), null);
assert.equal(read({}, "https://api.openai.com/v1/files", { purpose: "batch" }), null);

const mapped = { service: { "openai/gpt-4o-2024-08-06": "openai/gpt-4o", "claude-x": "anthropic/claude" } };
assert.equal(read(mapped, "https://api.openai.com/v1/chat/completions", { ...chat, model: "gpt-4o-2024-08-06" }).service, "openai/gpt-4o");
assert.equal(read(mapped, "https://api.anthropic.com/v1/messages", claude).service, "anthropic/claude");
assert.equal(read(mapped, "https://api.openai.com/v1/chat/completions", chat).service, "openai/gpt-4o");
const templated = { service: "sim/{host}/{model}", defaultOutput: 7, estimateInput: () => 42 };
assert.deepEqual(brief(read(templated, "http://127.0.0.1:8080/v1/chat/completions", { model: "m" })), ["sim/127.0.0.1/m", 42, 7]);

const events = new TextEncoder().encode(
  'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
  + 'data: {"type":"message_delta","usage":{"output_tokens":15}}\n\n');
for (let cut = 1; cut < events.length; cut++) {
  const sse = new SseUsage();
  sse.feed(events.slice(0, cut));
  sse.feed(events.slice(cut));
  assert.deepEqual(sse.usage(), [25, 15], `cut at ${cut}`);
}
const completed = new SseUsage();
completed.feed(new TextEncoder().encode('event: response.completed\ndata: {"type":"response.completed","response":'
  + '{"id":"r","usage":{"input_tokens":11,"output_tokens":5,"total_tokens":16}}}\n\n'));
assert.deepEqual(completed.usage(), [11, 5]);
const partial = new SseUsage();
partial.feed(new TextEncoder().encode('data: {"type":"message_delta","usage":{"output_tokens":15}}\n\n'));
assert.equal(partial.usage(), null);
console.log("ok");
