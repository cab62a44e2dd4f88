// Pages that load the packaged build, for the end-to-end tests, in headless Chromium (Playwright,
// the default) or in headless Firefox ESR (`TEST_BROWSER=firefox`: puppeteer-core over WebDriver BiDi;
// Playwright drives only its own patched Firefox builds, and this machine has Debian's). Both
// give the same small surface the tests use: `browser.newContext()` (a separate profile's
// storage), `newPage()`, and pages with `goto`, `evaluate`, `waitForFunction`, `reload`, `close`.
import { after, before } from "node:test";
import { serve } from "../../js/tools/serve.mjs";
import { launchChromium } from "./chromium.mjs";

/**
 * Which browser the tests run in: "chromium" (default) or "firefox". Not `BROWSER`, which many
 * environments already set to the user's desktop browser for tools that open a URL.
 */
export const browserName = process.env.TEST_BROWSER ?? "chromium";
if (!["chromium", "firefox"].includes(browserName)) throw new Error(`TEST_BROWSER must be chromium or firefox, not ${browserName}`);

/** Debian's Firefox ESR, with `prefs` set in its fresh profile; FIREFOX picks another binary. */
async function launchFirefox(prefs = {}) {
  const { default: puppeteer } = await import("puppeteer-core");
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.FIREFOX ?? "/usr/bin/firefox-esr",
    headless: true,
    extraPrefsFirefox: prefs,
  });
  // Playwright's names for what the tests call.
  return {
    newPage: () => browser.newPage(),
    newContext: () => browser.createBrowserContext(),
    version: () => browser.version(),
    close: () => browser.close(),
  };
}

function launch() {
  return browserName === "firefox" ? launchFirefox() : launchChromium();
}

/**
 * For a node:test file of pages that load the package: `before` serves `roots` and launches the
 * browser, `after` stops both. `open(context?)` gives a page of `page.html` once the package is
 * loaded, with the URLs it requests; `uncaught` collects every page's uncaught exceptions (an
 * aborted IndexedDB write once threw one per failed request), for the file's last test to check.
 * `withQuota(bytes)` gives a page whose origin may store about `bytes` (Chromium: a DevTools
 * override on a context of its own; Firefox: a browser of its own whose profile caps storage),
 * and `close()` for it.
 */
export function packagePages(roots) {
  const session = { server: undefined, browser: undefined, uncaught: [] };
  before(async () => {
    session.server = await serve(roots);
    session.browser = await launch();
    console.log(`pages in ${browserName} ${(await session.browser.version()).replace(/^[a-z]+\//i, "")}`);
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
  session.withQuota = async (bytes) => {
    if (browserName === "firefox") {
      const capped = await launchFirefox({ "dom.quotaManager.temporaryStorage.fixedLimit": Math.ceil(bytes / 1024) });
      const { page } = await session.open(capped);
      return { page, close: () => capped.close() };
    }
    const context = await session.browser.newContext();
    const { page } = await session.open(context);
    const cdp = await context.newCDPSession(page);
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: session.server.url, quotaSize: bytes });
    return { page, close: () => context.close() };
  };
  return session;
}
