// End-to-end test of the demo's chat page in a real browser (headless Chromium through
// playwright-core): two tabs connect through the bridge, a message typed in one appears in both.
//
//   node .ci/browser/chat.test.mjs http://127.0.0.1:PORT/
//
// The URL is the demo's `browser:` line (`cargo run --release --example demo`); .ci/browser.sh
// starts the demo and runs this. Uses the system Chromium (/usr/bin/chromium, or
// $CHROMIUM_PATH); playwright-core downloads no browser. Only 127.0.0.1 is ever contacted: every
// other host name fails to resolve inside the browser (--host-resolver-rules) and no proxy is
// used.
//
// Screenshot of page B (messages from both users): docs/demo.png when UPDATE_SCREENSHOT=1,
// otherwise target/browser-demo.png. On failure, both pages are saved as
// target/browser-failure-{a,b}.png.
//
// Prints one PASS/FAIL line per check and `browser: N passed, M failed`; exits 1 on any failure.

import { mkdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const MESSAGE_TIMEOUT = 10_000; // a sent message must show up in both pages within this
const CONNECT_TIMEOUT = 20_000; // page load + WebSocket open + the page's "joined" round trip
const WATCHDOG = 120_000; // the whole test, whatever hangs
const VIEWPORT = { width: 900, height: 600 };
const SCREENSHOT = process.env.UPDATE_SCREENSHOT === "1"
  ? join(ROOT, "docs", "demo.png")
  : join(ROOT, "target", "browser-demo.png");

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Localhost only: no proxy, and no name resolves except localhost (the demo's URLs are
  // 127.0.0.1 literals anyway).
  "--no-proxy-server",
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
];

const results = []; // { name, ok, detail }

function report(name, ok, detail = "") {
  results.push({ name, ok });
  console.log(`${ok ? "PASS" : "FAIL"}: browser ${name}${detail ? `: ${detail}` : ""}`);
}

function summary() {
  const passed = results.filter((r) => r.ok).length;
  console.log(`browser: ${passed} passed, ${results.length - passed} failed`);
  return results.length > 0 && passed === results.length ? 0 : 1;
}

/** Resolves when some `#log li` of `page` has exactly `text` (and, if given, class `kind`). */
function waitForLine(page, text, timeout, kind = null) {
  return page.waitForFunction(
    ([t, k]) =>
      [...document.querySelectorAll("#log li")].some(
        (li) => li.textContent === t && (k === null || li.classList.contains(k)),
      ),
    [text, kind],
    { timeout, polling: 50 },
  );
}

/** Waits, in all the pages at once, for `line` (with the class given, if any) for at most
 * MESSAGE_TIMEOUT from now; fails naming the first page that did not show it. */
async function expectLineEverywhere(pages, line) {
  const results = await Promise.allSettled(
    pages.map(([, page, kind]) => waitForLine(page, line, MESSAGE_TIMEOUT, kind)),
  );
  const missed = results.findIndex((r) => r.status === "rejected");
  if (missed >= 0) {
    const [label, page, kind] = pages[missed];
    const what = kind ? `${JSON.stringify(line)} (as class "${kind}")` : JSON.stringify(line);
    throw new Error(`page ${label} did not show ${what} within ${MESSAGE_TIMEOUT} ms; its log: ${JSON.stringify(await logLines(page))}`);
  }
}

/** The lines currently in a page's chat log, for failure messages. */
async function logLines(page) {
  try {
    return await page.$$eval("#log li", (items) => items.map((li) => li.textContent));
  } catch {
    return ["<page unavailable>"];
  }
}

/** Opens the chat page and waits until its socket is open; returns the page's chat name. */
async function connect(page, url) {
  await page.goto(url, { waitUntil: "load", timeout: CONNECT_TIMEOUT });
  await page.locator("#status.open").waitFor({ timeout: CONNECT_TIMEOUT });
  const status = (await page.locator("#status").textContent()) ?? "";
  const match = /^connected as (\S+)$/.exec(status.trim());
  if (!match) throw new Error(`unexpected status text ${JSON.stringify(status)}`);
  const name = match[1];
  // The backend learns a client's callback URL from the client's first message, the page's
  // "joined" line: once that line has come back, the backend relays everything to this page.
  await waitForLine(page, `* ${name} joined`, CONNECT_TIMEOUT);
  return name;
}

/** Switches to the page's tab, types `text` into its input like a person and presses Send. */
async function send(page, text) {
  // A background tab gets no animation frames, which Playwright's actionability checks wait
  // for: bring the tab to the front first, as a person would.
  await page.bringToFront();
  await page.locator("#text").click();
  await page.locator("#text").pressSequentially(text, { delay: 5 });
  await page.locator("#button").click();
}

/** Runs one check; a check throws to fail. Returns whether it passed. */
async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    report(name, true, `${Date.now() - started} ms`);
    return true;
  } catch (e) {
    report(name, false, (e && e.message ? e.message : String(e)).split("\n")[0]);
    return false;
  }
}

async function main(url) {
  if (!/^http:\/\/127\.0\.0\.1:\d+\/$/.test(url ?? "")) {
    report("arguments", false, `expected the demo's browser URL http://127.0.0.1:PORT/, got ${JSON.stringify(url)}`);
    return;
  }
  let browser;
  const pageErrors = [];
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      // launch() gives the browser a fresh temporary profile (user-data-dir) and removes it
      // when the browser closes.
      timeout: 30_000,
      env: { ...process.env, NO_PROXY: "127.0.0.1,localhost", no_proxy: "127.0.0.1,localhost" },
    });
    console.log(`chromium ${browser.version()} (${CHROMIUM})`);
    const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });
    const a = await context.newPage();
    const b = await context.newPage();
    for (const [label, page] of [["A", a], ["B", b]]) {
      page.on("pageerror", (e) => pageErrors.push(`page ${label}: ${e.message}`));
      page.on("console", (m) => {
        if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) console.log(`  page ${label} console error: ${m.text()} (${m.location().url})`);
      });
      page.on("response", (r) => {
        // The demo serves no /favicon.ico; the browser asks anyway. Anything else is news.
        if (r.status() >= 400 && new URL(r.url()).pathname !== "/favicon.ico") {
          console.log(`  page ${label}: ${r.status()} for ${r.url()}`);
        }
      });
    }

    let nameA;
    let nameB;
    // Unique per run (a millisecond timestamp; the lines also carry each page's random name),
    // with non-ASCII text to check UTF-8 end to end; readable, as they end up in docs/demo.png.
    const stamp = new Date().toISOString().slice(11, 23);
    const fromA = `Hello from tab A! Can tab B read this? (sent ${stamp})`;
    const fromB = `Yes, loud and clear — grüße zurück from tab B! (re: ${stamp})`;

    const connected = await check("two pages connected", async () => {
      nameA = await connect(a, url);
      nameB = await connect(b, url);
      console.log(`  page A is ${nameA}, page B is ${nameB}`);
      // A is connected, so it hears B arrive.
      await waitForLine(a, `* ${nameB} joined`, MESSAGE_TIMEOUT).catch(async () => {
        throw new Error(`page A never showed "* ${nameB} joined"; A's log: ${JSON.stringify(await logLines(a))}`);
      });
    });

    await check("the browser negotiated permessage-deflate with the bridge", async () => {
      const extensions = (await a.locator("#status").getAttribute("data-extensions")) ?? "";
      console.log(`  page A's WebSocket.extensions: ${JSON.stringify(extensions)}`);
      if (!extensions.includes("permessage-deflate")) {
        throw new Error(`WebSocket.extensions is ${JSON.stringify(extensions)}, expected permessage-deflate`);
      }
    });

    const aToB = connected && await check("message typed in page A appears in B and A", async () => {
      await send(a, fromA);
      const line = `${nameA}: ${fromA}`;
      await expectLineEverywhere([["B", b, null], ["A", a, "mine"]], line);
      if ((await a.locator("#text").inputValue()) !== "") throw new Error("page A's input was not cleared after sending");
    });

    const bToA = aToB && await check("reply typed in page B appears in A and B", async () => {
      await send(b, fromB);
      const line = `${nameB}: ${fromB}`;
      await expectLineEverywhere([["A", a, null], ["B", b, "mine"]], line);
    });

    await check("no JavaScript errors", async () => {
      if (pageErrors.length > 0) throw new Error(pageErrors.join("; "));
    });

    if (bToA) {
      await check(`screenshot of page B (${relative(ROOT, SCREENSHOT)})`, async () => {
        mkdirSync(dirname(SCREENSHOT), { recursive: true });
        await b.bringToFront();
        await b.locator("#text").blur(); // no caret blinking in the picture
        await b.screenshot({ path: SCREENSHOT, animations: "disabled", caret: "hide" });
      });
    } else {
      for (const [label, page] of [["a", a], ["b", b]]) {
        const path = join(ROOT, "target", `browser-failure-${label}.png`);
        try {
          mkdirSync(dirname(path), { recursive: true });
          await page.screenshot({ path });
          console.log(`  page ${label.toUpperCase()} saved as ${relative(ROOT, path)}`);
        } catch {
          // a diagnostic only
        }
      }
    }
  } catch (e) {
    report("run", false, (e && e.message ? e.message : String(e)).split("\n")[0]);
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

const watchdog = setTimeout(() => {
  report("run", false, `not finished within ${WATCHDOG / 1000} s`);
  process.exit(summary());
}, WATCHDOG);
watchdog.unref();

await main(process.argv[2]);
clearTimeout(watchdog);
process.exit(summary());
