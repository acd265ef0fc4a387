"""What an LLM API call costs and which Sluice service it belongs to, read from the HTTP request.

The SDK transports (`sluice.http`) and the Node `fetch` wrapper follow the same rules:

- **Service**: a template, by default `"{provider}/{model}"`. `provider` comes from the host
  (`api.openai.com` → `openai`, `api.anthropic.com` → `anthropic`, `*.openai.azure.com` → `azure`,
  `generativelanguage.googleapis.com` → `gemini`, …; any other host stands for itself, port
  dropped), `model` from the JSON body's `"model"` (or a Gemini URL's `models/<name>:`), `host`
  and `path` are there too. Or a mapping of model names (`"openai/gpt-4o-2024-08-06"` or
  `"gpt-4o-2024-08-06"`) onto service names, the template's default for the others; or any
  function of (method, url, body) returning the name.
- **Cost**: the prompt is estimated at one token per 4 characters of its text (messages, system
  prompt, `input`, `prompt`, Gemini `contents`) plus 4 per message, rounded up: OpenAI's rule of
  thumb for English, a little over for code. Pass `estimate_input=` for your own (e.g. tiktoken).
  The output is the request's own ceiling: `max_tokens`, `max_completion_tokens`,
  `max_output_tokens` (or Gemini's `generationConfig.maxOutputTokens`), else `default_output`.
  Sluice books input and output apart (Anthropic limits them apart) and their sum for token
  limits; the real usage replaces the estimate when the answer comes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

__all__ = ["Call", "CallRules", "PROVIDERS", "estimate_prompt", "SseUsage"]

#: Hosts of the providers with a name of their own; suffixes start with a dot.
PROVIDERS: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.together.xyz": "together",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "openrouter.ai": "openrouter",
    ".openai.azure.com": "azure",
}

_GEMINI_MODEL = re.compile(r"/models/([^/:]+)")


@dataclass(frozen=True)
class Call:
    """One API call as Sluice books it."""

    service: str
    input_tokens: int
    output_tokens: int


def provider_of(host: str, providers: Mapping[str, str] = PROVIDERS) -> str:
    """The provider's name for `host` (without port)."""
    host = host.lower()
    if host in providers:
        return providers[host]
    for suffix, name in providers.items():
        if suffix.startswith(".") and host.endswith(suffix):
            return name
    return host


def _text(value: Any) -> Tuple[int, int]:
    """(characters, messages) of the prompt text in `value`, any nesting of the APIs' shapes."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, list):
        chars = messages = 0
        for item in value:
            c, m = _text(item)
            chars += c
            messages += m
            if isinstance(item, Mapping) and ("role" in item or "parts" in item):
                messages += 1
        return chars, messages
    if isinstance(value, Mapping):
        chars = messages = 0
        for key in ("content", "text", "parts", "input", "arguments", "output"):
            if key in value:
                c, m = _text(value[key])
                chars += c
                messages += m
        return chars, messages
    return 0, 0


def estimate_prompt(body: Mapping[str, Any]) -> int:
    """Prompt tokens of a request body: ⌈characters / 4⌉ + 4 per message."""
    chars = messages = 0
    for key in ("messages", "system", "input", "prompt", "contents", "instructions", "systemInstruction"):
        if key in body:
            c, m = _text(body[key])
            chars += c
            messages += m
    tools = body.get("tools")
    if tools:
        chars += len(json.dumps(tools, separators=(",", ":")))
    return math.ceil(chars / 4) + 4 * messages


def _ceiling(body: Mapping[str, Any]) -> Optional[int]:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    config = body.get("generationConfig")
    if isinstance(config, Mapping) and isinstance(config.get("maxOutputTokens"), int):
        return int(config["maxOutputTokens"])
    return None


ServiceRule = Union[str, Mapping[str, str], Callable[[str, str, Optional[Mapping[str, Any]]], str]]


@dataclass
class CallRules:
    """How requests map to Sluice services and costs (see the module's doc)."""

    service: ServiceRule = "{provider}/{model}"
    estimate_input: Callable[[Mapping[str, Any]], int] = estimate_prompt
    default_output: int = 1024
    providers: Mapping[str, str] = field(default_factory=lambda: dict(PROVIDERS))

    def read(self, method: str, url: str, content: bytes) -> Optional[Call]:
        """The call a request makes, or None for a request that is not a model call (no JSON
        body naming a model, nor a Gemini model URL): those pass through unbooked."""
        body: Optional[Mapping[str, Any]] = None
        if content:
            try:
                parsed = json.loads(content)
            except ValueError:
                parsed = None
            body = parsed if isinstance(parsed, Mapping) else None
        parts = urlsplit(url)
        model = body.get("model") if body else None
        if not isinstance(model, str):
            found = _GEMINI_MODEL.search(parts.path)
            model = found.group(1) if found else None
        if model is None or method.upper() != "POST":
            return None
        host = parts.hostname or ""
        provider = provider_of(host, self.providers)
        if callable(self.service):
            service = self.service(method, url, body)
        elif isinstance(self.service, Mapping):
            # Model names (as "provider/model" or "model") onto services; others by default.
            default = f"{provider}/{model}"
            service = self.service.get(default, self.service.get(model, default))
        else:
            service = self.service.format(provider=provider, model=model, host=host, path=parts.path)
        body = body or {}
        ceiling = _ceiling(body)
        output = self.default_output if ceiling is None else ceiling
        return Call(service, max(0, int(self.estimate_input(body))), output)


class SseUsage:
    """Reads the usage of a streamed answer from its server-sent events as the bytes go by:
    OpenAI's final chunk (`stream_options={"include_usage": True}`), the Responses API's
    `response.completed`, Anthropic's `message_start` and `message_delta`, Gemini's
    `usageMetadata`. Keeps only the line being read."""

    MAX_LINE = 1 << 20

    def __init__(self) -> None:
        self._line = b""
        self.input: Optional[int] = None
        self.output: Optional[int] = None

    def feed(self, chunk: bytes) -> None:
        data = self._line + chunk
        *lines, self._line = data.split(b"\n")
        if len(self._line) > self.MAX_LINE:
            self._line = b""
        for line in lines:
            line = line.strip()
            if line.startswith(b"data:") and b"sage" in line:
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, Mapping):
            return
        for holder in (event, event.get("message"), event.get("response")):
            if not isinstance(holder, Mapping):
                continue
            usage = holder.get("usage")
            if isinstance(usage, Mapping):
                self._usage(usage)
            meta = holder.get("usageMetadata")
            if isinstance(meta, Mapping):
                self.input = _int(meta.get("promptTokenCount"), self.input)
                self.output = _int(meta.get("candidatesTokenCount"), self.output)

    def _usage(self, usage: Mapping[str, Any]) -> None:
        if "prompt_tokens" in usage:
            self.input = _int(usage.get("prompt_tokens"), self.input)
            self.output = _int(usage.get("completion_tokens"), self.output)
            return
        if "input_tokens" in usage and usage.get("input_tokens") is not None:
            cached = _int(usage.get("cache_creation_input_tokens"), 0) or 0
            base = _int(usage.get("input_tokens"), None)
            if base is not None:
                self.input = base + cached
        self.output = _int(usage.get("output_tokens"), self.output)

    def usage(self) -> Optional[Tuple[int, int]]:
        """(input, output) when the stream told them (output alone keeps the input estimate
        out: both or nothing)."""
        if self.input is None or self.output is None:
            return None
        return self.input, self.output


def _int(value: Any, default: Optional[int]) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default
