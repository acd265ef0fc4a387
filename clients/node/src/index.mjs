// sluice-client: Sluice's Node client. `Client` (gRPC: acquire, report, status), and
// `sluiceFetch`, a fetch for the official SDKs (`new OpenAI({ fetch: sluiceFetch(client) })`).

export { Client, Denied, Permit, usageFromJson } from "./client.mjs";
export { sluiceFetch } from "./fetch.mjs";
export { estimatePrompt, providerOf, readCall, SseUsage, PROVIDERS } from "./calls.mjs";
