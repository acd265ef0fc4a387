//! Requests and answers in the official SDKs' wire format, so `openai`, `anthropic` and their
//! Node twins can be pointed at the simulated provider (`base_url`): a chat completion or a
//! message request (its `model`, `messages`, `system`, `max_tokens`, `stream`) is counted as the
//! provider would, and answered with a body those SDKs parse, or as server-sent events when it
//! asks for a stream (OpenAI's final usage chunk when `stream_options.include_usage` is set;
//! Anthropic's `message_start` and `message_delta` usage).
//!
//! The provider counts a prompt as one token per 4 characters of its text, rounded up, with no
//! per-message overhead (so a client's estimate, which adds some, is reconciled down), and
//! answers [`ANSWER_TOKENS`] output tokens, or the request's ceiling if lower.

use serde_json::{json, Value};

use crate::headers::Style;

/// Output tokens of every answer, unless the request's `max_tokens` is lower.
pub const ANSWER_TOKENS: u64 = 20;

/// A model call read from an SDK's request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdkCall {
    /// The model asked for.
    pub model: String,
    /// Prompt tokens as the provider counts them.
    pub input_tokens: u64,
    /// Output tokens it answers.
    pub output_tokens: u64,
    /// The answer goes as server-sent events.
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`.
    pub include_usage: bool,
}

fn text_chars(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(map) => ["content", "text"]
            .iter()
            .filter_map(|k| map.get(*k))
            .map(text_chars)
            .sum(),
        _ => 0,
    }
}

/// The call an SDK request body makes; None if it names no model.
pub fn read(body: &Value) -> Option<SdkCall> {
    let model = body.get("model")?.as_str()?.to_string();
    let chars: u64 = ["messages", "system", "input", "prompt"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(text_chars)
        .sum();
    let ceiling = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    Some(SdkCall {
        model,
        input_tokens: chars.div_ceil(4),
        output_tokens: ceiling.map_or(ANSWER_TOKENS, |c| c.min(ANSWER_TOKENS)),
        stream,
        include_usage,
    })
}

/// The content type and body of a successful answer to `call`.
pub fn answer(style: Style, call: &SdkCall) -> (&'static str, String) {
    let (input, output, model) = (call.input_tokens, call.output_tokens, &call.model);
    match (style, call.stream) {
        (Style::OpenAi, false) => (
            "application/json",
            json!({
                "id": "chatcmpl-sim", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": input, "completion_tokens": output,
                          "total_tokens": input + output},
            })
            .to_string(),
        ),
        (Style::Anthropic, false) => (
            "application/json",
            json!({
                "id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": output},
            })
            .to_string(),
        ),
        (Style::OpenAi, true) => {
            let chunk = |choices: Value| {
                json!({"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 0,
                       "model": model, "choices": choices})
            };
            let mut events = vec![
                chunk(json!([{"index": 0, "finish_reason": null,
                              "delta": {"role": "assistant", "content": "ok"}}])),
                chunk(json!([{"index": 0, "finish_reason": "stop", "delta": {}}])),
            ];
            if call.include_usage {
                let mut last = chunk(json!([]));
                last["usage"] = json!({"prompt_tokens": input, "completion_tokens": output,
                                       "total_tokens": input + output});
                events.push(last);
            }
            let mut out: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            out.push_str("data: [DONE]\n\n");
            ("text/event-stream", out)
        }
        (Style::Anthropic, true) => {
            let events = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {
                    "id": "msg_sim", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": 1}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "ok"}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"output_tokens": output}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            let out = events
                .iter()
                .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
                .collect();
            ("text/event-stream", out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_openai_chat_request_and_answers_with_usage() {
        let body = json!({"model": "gpt-4o", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "x".repeat(41)}]});
        let call = read(&body).expect("a model call");
        assert_eq!((call.input_tokens, call.output_tokens), (11, 20));
        let (kind, text) = answer(Style::OpenAi, &call);
        assert_eq!(kind, "application/json");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["usage"]["total_tokens"], 31);
        assert_eq!(v["choices"][0]["message"]["content"], "ok");
    }

    #[test]
    fn streams_anthropic_usage_in_message_start_and_delta() {
        let body = json!({"model": "claude", "max_tokens": 5, "stream": true,
                          "system": "abcd", "messages": [{"role": "user",
                          "content": [{"type": "text", "text": "abcd"}]}]});
        let call = read(&body).expect("a model call");
        assert_eq!((call.input_tokens, call.output_tokens), (2, 5));
        let (kind, text) = answer(Style::Anthropic, &call);
        assert_eq!(kind, "text/event-stream");
        assert!(
            text.contains(r#""usage":{"input_tokens":2,"output_tokens":1}"#),
            "{text}"
        );
        assert!(text.contains(r#""usage":{"output_tokens":5}"#), "{text}");
        assert!(read(&json!({"input_tokens": 3})).is_none());
    }
}
