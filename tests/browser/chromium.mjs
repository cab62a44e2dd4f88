// Headless Chromium for the browser tests: Debian's build driven by playwright-core (no browser
// download), with the flags this machine needs (TOOLCHAIN.md). CHROMIUM picks another binary.
import { chromium } from "playwright-core";

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
