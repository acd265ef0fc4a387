// The Node SDK run of tests/tests/node_sdk.rs: 8 concurrent workers, each making calls through
// the official `openai` and `@anthropic-ai/sdk` packages with `fetch: sluiceFetch(...)`, against
// simulated providers; every other call streams its answer. Prints one JSON line of what
// completed; exits non-zero on any failure.
//
// Environment: SLUICE_ADDR, OPENAI_BASE_URL, ANTHROPIC_BASE_URL, PROMPT, MAX_TOKENS, CALLS.

import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { Client, sluiceFetch } from "../src/index.mjs";

const WORKERS = 8;
const CALLS = Number(process.env.CALLS);
const MAX_TOKENS = Number(process.env.MAX_TOKENS);
const messages = [{ role: "user", content: process.env.PROMPT }];

const sluice = new Client(process.env.SLUICE_ADDR, "node-sdk-test");
const openai = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL, apiKey: "sk-test", maxRetries: 8,
  fetch: sluiceFetch(sluice, { service: "sim-openai/{model}" }),
});
const anthropic = new Anthropic({
  baseURL: process.env.ANTHROPIC_BASE_URL, apiKey: "test", maxRetries: 8,
  fetch: sluiceFetch(sluice, { service: "sim-anthropic/{model}" }),
});

const done = { openai: 0, anthropic: 0, streamed: 0 };

async function worker() {
  for (let i = 0; i < CALLS; i++) {
    if (i % 2 === 1) {
      let text = "";
      const chunks = await openai.chat.completions.create({
        model: "gpt-4o-mini", max_tokens: MAX_TOKENS, messages, stream: true,
        stream_options: { include_usage: true },
      });
      for await (const c of chunks) text += c.choices[0]?.delta?.content ?? "";
      assert.equal(text, "ok");
      let said = "";
      const events = await anthropic.messages.create({ model: "claude-3-5-haiku", max_tokens: MAX_TOKENS, messages, stream: true });
      for await (const e of events) if (e.type === "content_block_delta") said += e.delta.text;
      assert.equal(said, "ok");
      done.streamed += 2;
    } else {
      const reply = await openai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: MAX_TOKENS, messages });
      assert.equal(reply.choices[0].message.content, "ok");
      const message = await anthropic.messages.create({ model: "claude-3-5-haiku", max_tokens: MAX_TOKENS, messages });
      assert.equal(message.content[0].text, "ok");
    }
    done.openai += 1;
    done.anthropic += 1;
  }
}

await Promise.all(Array.from({ length: WORKERS }, worker));
sluice.close();
console.log(JSON.stringify(done));
