// Opens Sluice's status page in headless Chromium (Debian's, driven by playwright-core) for
// tests/tests/status_page.rs, and talks to the test over stdin/stdout, one line each way:
//   prints "ready" once the page shows SERVICE;
//   waits for a line on stdin (the test has reported a 429), then waits until the page shows
//   SERVICE cooling down, and prints "cooldown <ms since the line> <the card's text>";
//   saves a screenshot of the page to SCREENSHOT and prints "screenshot <path>".
// Usage: node status-page.mjs URL SERVICE SCREENSHOT
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, service, screenshot] = process.argv.slice(2);
const executablePath = process.env.SLUICE_CHROMIUM || "/usr/bin/chromium";
const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

// Flags for a closed network: no background connections (playwright gives it a fresh profile).
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 700 } });
  const card = `section[data-service="${service}"]`;
  await page.goto(url);
  await page.waitForSelector(card, { timeout: 15000 });
  console.log("ready");
  await lines.next();
  const reported = Date.now();
  await page.waitForSelector(`${card} .cooldown`, { timeout: 15000 });
  const after = Date.now() - reported;
  const text = (await page.textContent(card)).replace(/\s+/g, " ");
  console.log(`cooldown ${after} ${text}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot ${screenshot}`);
} finally {
  await browser.close();
  input.close();
}
