// Headless Chromium for the browser tests: Debian's build driven by playwright-core (no browser
// download), with the flags this machine needs (TOOLCHAIN.md). CHROMIUM picks another binary.
import { after, before } from "node:test";
import { chromium } from "playwright-core";
import { serve } from "../../js/tools/serve.mjs";

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--disable-quic",
    ],
  });
}

/**
 * Record what a page does that a user would call broken: console errors, uncaught exceptions,
 * failed requests and HTTP errors (a 404 favicon included). `problems` lists them.
 */
export function watchPage(page) {
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
  page.on("requestfailed", (request) => {
    // A download the page itself cancels (a blob: URL revoked after the click) is no failure.
    if (!request.url().startsWith("blob:")) problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  return problems;
}

/**
 * For a node:test file of pages that load the package: `before` serves `roots` and launches
 * Chromium, `after` stops both. `open(context?)` gives a page of `page.html` once the package is
 * loaded, with the URLs it requests; `uncaught` collects every page's uncaught exceptions (an
 * aborted IndexedDB write once threw one per failed request), for the file's last test to check.
 */
export function packagePages(roots) {
  const session = { server: undefined, browser: undefined, uncaught: [] };
  before(async () => {
    session.server = await serve(roots);
    session.browser = await launchChromium();
  });
  after(async () => {
    await session.browser?.close();
    await session.server?.close();
  });
  session.open = async (context) => {
    const page = await (context ?? session.browser).newPage();
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("pageerror", (e) => session.uncaught.push(e.message));
    await page.goto(`${session.server.url}/page.html`);
    await page.waitForFunction(() => document.getElementById("status").textContent === "ready");
    return { page, requests };
  };
  return session;
}
