// What an LLM API call costs and which Sluice service it belongs to, read from the HTTP request:
// the same rules as the Python package's `sluice.calls`.
//
// - Service: a template, by default "{provider}/{model}". `provider` comes from the host
//   (api.openai.com → openai, api.anthropic.com → anthropic, *.openai.azure.com → azure,
//   generativelanguage.googleapis.com → gemini, …; any other host stands for itself), `model`
//   from the JSON body's "model" (or a Gemini URL's models/<name>:), `host` and `path` too. Or an
//   object mapping model names ("openai/gpt-4o-2024-08-06" or "gpt-4o-2024-08-06") onto service
//   names (the others by default), or a function ({ method, url, body }) => name.
// - Cost: the prompt at one token per 4 characters of its text plus 4 per message, rounded up
//   (or `estimateInput(body)`); the output at the request's max_tokens / max_completion_tokens /
//   max_output_tokens (Gemini: generationConfig.maxOutputTokens), else `defaultOutput` (1024).

export const PROVIDERS = {
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
};

const GEMINI_MODEL = /\/models\/([^/:]+)/;

export function providerOf(host, providers = PROVIDERS) {
  const h = host.toLowerCase();
  if (h in providers) return providers[h];
  for (const [suffix, name] of Object.entries(providers)) {
    if (suffix.startsWith(".") && h.endsWith(suffix)) return name;
  }
  return h;
}

function text(value) {
  if (typeof value === "string") return [value.length, 0];
  let chars = 0;
  let messages = 0;
  if (Array.isArray(value)) {
    for (const item of value) {
      const [c, m] = text(item);
      chars += c;
      messages += m;
      if (item && typeof item === "object" && !Array.isArray(item) && ("role" in item || "parts" in item)) messages += 1;
    }
  } else if (value && typeof value === "object") {
    for (const key of ["content", "text", "parts", "input", "arguments", "output"]) {
      if (key in value) {
        const [c, m] = text(value[key]);
        chars += c;
        messages += m;
      }
    }
  }
  return [chars, messages];
}

/** Prompt tokens of a request body: ⌈characters / 4⌉ + 4 per message. */
export function estimatePrompt(body) {
  let chars = 0;
  let messages = 0;
  for (const key of ["messages", "system", "input", "prompt", "contents", "instructions", "systemInstruction"]) {
    if (key in body) {
      const [c, m] = text(body[key]);
      chars += c;
      messages += m;
    }
  }
  if (body.tools) chars += JSON.stringify(body.tools).length;
  return Math.ceil(chars / 4) + 4 * messages;
}

function ceiling(body) {
  for (const key of ["max_completion_tokens", "max_tokens", "max_output_tokens"]) {
    const v = body[key];
    if (Number.isInteger(v) && v >= 0) return v;
  }
  const v = body.generationConfig?.maxOutputTokens;
  return Number.isInteger(v) ? v : null;
}

/**
 * The call a request makes ({ service, inputTokens, outputTokens }), or null for one that is not
 * a model call (no JSON body naming a model, nor a Gemini model URL, or not a POST).
 */
export function readCall({ method, url, body: raw }, rules = {}) {
  const { service = "{provider}/{model}", estimateInput = estimatePrompt, defaultOutput = 1024, providers = PROVIDERS } = rules;
  let body = null;
  if (typeof raw === "string" && raw.length > 0) {
    try {
      const parsed = JSON.parse(raw);
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed;
    } catch {
      body = null;
    }
  }
  const parts = new URL(url);
  let model = typeof body?.model === "string" ? body.model : null;
  if (model === null) model = GEMINI_MODEL.exec(parts.pathname)?.[1] ?? null;
  if (model === null || method.toUpperCase() !== "POST") return null;
  const host = parts.hostname;
  const provider = providerOf(host, providers);
  let name;
  if (typeof service === "function") {
    name = service({ method, url, body });
  } else if (typeof service === "object" && service !== null) {
    // Model names (as "provider/model" or "model") onto services; others by default.
    const fallback = `${provider}/${model}`;
    name = service[fallback] ?? service[model] ?? fallback;
  } else {
    name = service
      .replaceAll("{provider}", provider)
      .replaceAll("{model}", model)
      .replaceAll("{host}", host)
      .replaceAll("{path}", parts.pathname);
  }
  const b = body ?? {};
  const c = ceiling(b);
  return { service: name, inputTokens: Math.max(0, Math.floor(estimateInput(b))), outputTokens: c ?? defaultOutput };
}

const asCount = (v, fallback) => (Number.isInteger(v) && v >= 0 ? v : fallback);

/**
 * Reads a streamed answer's usage from its server-sent events as the bytes go by: OpenAI's final
 * chunk, the Responses API's `response.completed`, Anthropic's `message_start` and
 * `message_delta`, Gemini's `usageMetadata`.
 */
export class SseUsage {
  #line = "";
  #decoder = new TextDecoder();
  input = null;
  output = null;

  feed(chunk) {
    const lines = (this.#line + this.#decoder.decode(chunk, { stream: true })).split("\n");
    this.#line = lines.pop() ?? "";
    if (this.#line.length > 1 << 20) this.#line = "";
    for (const raw of lines) {
      const line = raw.trim();
      if (line.startsWith("data:") && line.includes("sage")) this.#event(line.slice(5).trim());
    }
  }

  #event(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (!event || typeof event !== "object") return;
    for (const holder of [event, event.message, event.response]) {
      if (!holder || typeof holder !== "object") continue;
      const u = holder.usage;
      if (u && typeof u === "object") {
        if ("prompt_tokens" in u) {
          this.input = asCount(u.prompt_tokens, this.input);
          this.output = asCount(u.completion_tokens, this.output);
        } else {
          if (Number.isInteger(u.input_tokens)) this.input = u.input_tokens + asCount(u.cache_creation_input_tokens, 0);
          this.output = asCount(u.output_tokens, this.output);
        }
      }
      const m = holder.usageMetadata;
      if (m && typeof m === "object") {
        this.input = asCount(m.promptTokenCount, this.input);
        this.output = asCount(m.candidatesTokenCount, this.output);
      }
    }
  }

  /** [input, output] when the stream told both, else null. */
  usage() {
    return this.input === null || this.output === null ? null : [this.input, this.output];
  }
}
