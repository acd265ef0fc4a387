"""The rules that read an API call from its request (sluice.calls): service names, cost
estimates, streamed usage. Run by tests/tests/python.rs; the Node twin is
clients/node/test/test_calls.mjs and must agree. Exits non-zero on a failed check."""

import json

from sluice.calls import CallRules, SseUsage


def read(rules, url, body, method="POST"):
    return rules.read(method, url, json.dumps(body).encode() if body is not None else b"")


rules = CallRules()
chat = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hello world!"}]}
call = read(rules, "https://api.openai.com/v1/chat/completions", chat)
assert (call.service, call.input_tokens, call.output_tokens) == ("openai/gpt-4o", 7, 100), call
claude = {"model": "claude-x", "max_tokens": 1000, "system": "be brief",
          "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
call = read(rules, "https://api.anthropic.com/v1/messages", claude)
assert (call.service, call.input_tokens, call.output_tokens) == ("anthropic/claude-x", 7, 1000), call
gemini = {"contents": [{"parts": [{"text": "abcdefgh"}]}], "generationConfig": {"maxOutputTokens": 50}}
call = read(rules, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent", gemini)
assert (call.service, call.input_tokens, call.output_tokens) == ("gemini/gemini-2.0-flash", 6, 50), call
# Output ceilings: OpenAI's max_completion_tokens (it wins over a max_tokens beside it) and the
# Responses API's max_output_tokens.
reasoning = {"model": "o3-mini", "max_completion_tokens": 64, "messages": [{"role": "user", "content": "hello world!"}]}
call = read(rules, "https://api.openai.com/v1/chat/completions", reasoning)
assert (call.service, call.input_tokens, call.output_tokens) == ("openai/o3-mini", 7, 64), call
call = read(rules, "https://api.openai.com/v1/chat/completions", dict(reasoning, max_tokens=100))
assert call.output_tokens == 64, call
responses = {"model": "gpt-4o", "instructions": "be brief", "max_output_tokens": 80,
             "input": [{"role": "user", "content": "hello world!"}]}
call = read(rules, "https://api.openai.com/v1/responses", responses)
assert (call.service, call.input_tokens, call.output_tokens) == ("openai/gpt-4o", 9, 80), call
call = read(rules, "https://acme.openai.azure.com/openai/deployments/x/chat/completions", {"model": "gpt-4o", "messages": []})
assert (call.service, call.output_tokens) == ("azure/gpt-4o", 1024), call
# Not model calls: a GET, a body naming no model.
assert read(rules, "https://api.openai.com/v1/models", None, method="GET") is None
assert read(rules, "https://api.openai.com/v1/files", {"purpose": "batch"}) is None

# A mapping of model names onto services; others by the default.
mapped = CallRules(service={"openai/gpt-4o-2024-08-06": "openai/gpt-4o", "claude-x": "anthropic/claude"})
dated = dict(chat, model="gpt-4o-2024-08-06")
assert read(mapped, "https://api.openai.com/v1/chat/completions", dated).service == "openai/gpt-4o"
assert read(mapped, "https://api.anthropic.com/v1/messages", claude).service == "anthropic/claude"
assert read(mapped, "https://api.openai.com/v1/chat/completions", chat).service == "openai/gpt-4o"
templated = CallRules(service="sim/{host}/{model}", default_output=7, estimate_input=lambda b: 42)
call = read(templated, "http://127.0.0.1:8080/v1/chat/completions", {"model": "m"})
assert (call.service, call.input_tokens, call.output_tokens) == ("sim/127.0.0.1/m", 42, 7), call

# Streamed usage, split anywhere across chunks.
events = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
          b'data: {"type":"message_delta","usage":{"output_tokens":15}}\n\n')
for cut in range(1, len(events)):
    sse = SseUsage()
    sse.feed(events[:cut])
    sse.feed(events[cut:])
    assert sse.usage() == (25, 15), (cut, sse.usage())
openai_final = b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}\n\ndata: [DONE]\n\n'
sse = SseUsage()
sse.feed(openai_final)
assert sse.usage() == (9, 3)
responses_final = (b'event: response.completed\ndata: {"type":"response.completed","response":'
                   b'{"id":"r","usage":{"input_tokens":11,"output_tokens":5,"total_tokens":16}}}\n\n')
sse = SseUsage()
sse.feed(responses_final)
assert sse.usage() == (11, 5)
partial = SseUsage()
partial.feed(b'data: {"type":"message_delta","usage":{"output_tokens":15}}\n\n')
assert partial.usage() is None  # output alone: the estimate stays
print("ok")
