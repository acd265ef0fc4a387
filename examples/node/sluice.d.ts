// Types of sluice.mjs for TypeScript workers.

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
  report(status: number, headers?: HeadersLike, usage?: [number, number] | null): Promise<ReportAnswer>;
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
