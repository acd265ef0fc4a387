// Types of sluice-client for TypeScript workers.

export class Denied extends Error {
  retryAfter: number;
  reason: string;
  limit: string;
}

export interface AcquireOptions {
  tokens?: number;
  inputTokens?: number;
  outputTokens?: number;
  /** Seconds; default 60. */
  maxWait?: number;
  requestId?: string;
  /** Priority class: `interactive`, `default`, `batch`, or as the server configures them. */
  priority?: string;
}

export interface ReportAnswer {
  cooldown: number;
  cooldownSet: boolean;
  detail: string;
}

export type HeadersLike = { entries(): IterableIterator<[string, string]> } | Record<string, string>;

export class Permit {
  readonly service: string;
  readonly leaseId: string;
  readonly limit: string;
  readonly wait: number;
  reported: boolean;
  report(response: Response): Promise<ReportAnswer>;
  report(status: number, headers?: HeadersLike, usage?: [number, number] | null, body?: Uint8Array): Promise<ReportAnswer>;
  /** Reports that the call got no answer: its in-flight slot is released, nothing else. */
  abandon(): Promise<ReportAnswer>;
}

export class Client {
  constructor(target?: string, clientId?: string);
  acquire(service: string, options?: AcquireOptions): Promise<Permit>;
  withPermit<T>(service: string, options: AcquireOptions, work: (permit: Permit) => Promise<T>): Promise<T>;
  status(service: string): Promise<any>;
  close(): void;
}

export function usageFromJson(body: unknown): [number, number] | null;

/** How requests map to Sluice services and costs (see calls.mjs). */
export interface CallRules {
  /** A template ("{provider}/{model}", also {host}, {path}), model names onto services, or a function of the request. */
  service?: string | Record<string, string> | ((request: { method: string; url: string; body: Record<string, unknown> | null }) => string);
  /** Prompt tokens of a request body; default ⌈characters / 4⌉ + 4 per message. */
  estimateInput?: (body: Record<string, unknown>) => number;
  /** Output tokens booked when the request sets no max_tokens; default 1024. */
  defaultOutput?: number;
  /** Host (or ".suffix") → provider name. */
  providers?: Record<string, string>;
}

export interface FetchOptions extends CallRules {
  /** Seconds to wait for a slot; default 60. */
  maxWait?: number;
  /**
   * "throw" (default): reject with Denied (the SDKs retry a rejected fetch `maxRetries` times,
   * acquiring again each time: use `maxRetries: 0` for the denial at once); "429": answer the
   * SDK a 429 with retry-after-ms, so its retries wait Sluice's retry_after.
   */
  onDenied?: "throw" | "429";
  priority?: string;
  /** The fetch that sends the request; default globalThis.fetch. */
  fetch?: typeof fetch;
}

/** A fetch for the official SDKs' `fetch` option that books every model call on `client`. */
export function sluiceFetch(client: Client, options?: FetchOptions): typeof fetch;

export interface Call {
  service: string;
  inputTokens: number;
  outputTokens: number;
}

export function readCall(request: { method: string; url: string; body: string }, rules?: CallRules): Call | null;
export function estimatePrompt(body: Record<string, unknown>): number;
export function providerOf(host: string, providers?: Record<string, string>): string;
export const PROVIDERS: Record<string, string>;

export class SseUsage {
  input: number | null;
  output: number | null;
  feed(chunk: Uint8Array): void;
  usage(): [number, number] | null;
}
