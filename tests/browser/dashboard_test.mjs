// End to end: the dashboard in Debian's real headless Chromium, driven by playwright-core,
// against the real rbee-hive (with an API token) and the local Hub fixture process.
//
//   node tests/browser/dashboard_test.mjs --hive build/hive/rbee-hive \
//        --fixture build/tests/rbee-hub-fixture --artifacts build/test-artifacts
//
// It unlocks the page with the token, starts a download from the form, watches its bar reach
// 100% and the model turn ready, cancels a second download with its button, and saves a
// screenshot of the page mid-download (dashboard-live.png) and at the end (dashboard.png) into
// the artifacts folder.

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: { hive: { type: "string" }, fixture: { type: "string" }, artifacts: { type: "string" },
             chromium: { type: "string", default: "/usr/bin/chromium" } },
});
const TOKEN = "dashboard-test-token-0123456789";
const REPO = "acme/tiny-chat-GGUF";
const TIMEOUT = 30_000;

// Starts a process and resolves with the first match of `pattern` in its output.
function start(command, argv, env, pattern) {
  const child = spawn(command, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const found = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} did not start:\n${output}`)), TIMEOUT);
    const look = (chunk) => {
      output += chunk;
      const match = output.match(pattern);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    child.on("exit", (code) => reject(new Error(`${command} exited (${code}):\n${output}`)));
  });
  return { child, found, output: () => output };
}

// Only what the processes need: never the developer's HF_* or RBEE_* settings.
function cleanEnv(extra) {
  return Object.assign({ PATH: process.env.PATH, HOME: process.env.HOME }, extra);
}

const work = mkdtempSync(join(tmpdir(), "rbee-dashboard-"));
const processes = [];
let browser;
try {
  const fixture = start(args.fixture, [
    "--repo", REPO, "--lfs-file", "tiny-chat.Q4_K_M.gguf:25165824", "--lfs-file", "tiny-chat.Q8_0.gguf:134217728",
    "--file", "config.json:613", "--file", "tokenizer.json:48211", "--rate-limit", "4194304",
  ], cleanEnv({}), /endpoint (\S+)/);
  processes.push(fixture);
  const endpoint = await fixture.found;

  const hive = start(args.hive, [
    "serve", "--port", "0", "--cache-dir", join(work, "models"), "--api-token", TOKEN,
    "--disk-reserve-mb", "0", "--progress-interval-ms", "250",
    // One connection per file: the 128 MiB file then takes 32 s at the fixture's 4 MiB/s per
    // connection, so the cancel button is clicked mid-download even on a loaded machine (over 8
    // ranges it once finished in 4.6 s, before a sanitizer run's browser clicked).
    "--connections", "1",
  ], cleanEnv({ HF_ENDPOINT: endpoint, HF_HOME: join(work, "hf-home") }), /Listening on (http:\/\/\S+)/);
  processes.push(hive);
  const hiveUrl = await hive.found;

  browser = await chromium.launch({ executablePath: args.chromium, args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(error.message));
  page.on("console", (message) => { if (message.type() === "error") pageErrors.push(message.text()); });
  page.setDefaultTimeout(TIMEOUT);

  // A hive with a token: the page asks for it once, then keeps it in session storage.
  await page.goto(hiveUrl);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.fill("#login-form input[name=token]", TOKEN);
  await page.click("#login-form button");
  await page.locator("#login").waitFor({ state: "hidden" });
  await page.waitForFunction(() => document.getElementById("health").textContent.startsWith("ok"));
  if (await page.evaluate(() => sessionStorage.getItem("rbee-token")) !== TOKEN)
    throw new Error("the token is not kept in session storage");
  pageErrors.length = 0;  // the 401s that showed the token form were expected

  // A download from the form: its live bar reaches 100% and the catalog says ready.
  await page.fill("#download-form input[name=model]", REPO);
  await page.fill("#download-form input[name=include]", "*.json, *Q4_K_M*");
  await page.click("#download-form button");
  await page.locator("#message", { hasText: "Started job-" }).waitFor();
  const first = page.locator("tr.job").first();
  await first.locator(".bar[aria-valuenow]").waitFor();
  mkdirSync(args.artifacts, { recursive: true });
  const seenPercents = new Set();
  while (!(await first.locator(".state.completed").count())) {
    const value = await first.locator(".bar").getAttribute("aria-valuenow").catch(() => null);
    if (value !== null) seenPercents.add(Number(value));
    if (Number(value) >= 40 && !seenPercents.has("shot")) {  // the page mid-download, for the README
      seenPercents.add("shot");
      await page.screenshot({ path: join(args.artifacts, "dashboard-live.png") });
    }
    await page.waitForTimeout(100);
  }
  await first.locator('.bar[aria-valuenow="100"]').waitFor();
  const partial = [...seenPercents].filter((p) => typeof p === "number" && p > 0 && p < 100);
  if (partial.length === 0) throw new Error(`the bar never showed progress between 0 and 100%: ${[...seenPercents]}`);
  await page.locator(`tr[data-model="${REPO}"] .state.ready`).waitFor();
  await page.locator("#log", { hasText: `Downloaded ${REPO}: 3 files` }).waitFor();  // narration of the selected job
  await page.locator("#log .terminal", { hasText: "[DONE]" }).waitFor();

  // A second, larger download is cancelled with its button.
  await page.fill("#download-form input[name=model]", `${REPO}:tiny-chat.Q8_0.gguf`);
  await page.fill("#download-form input[name=include]", "");
  await page.click("#download-form button");
  const second = page.locator("tr.job").first();
  await second.locator(".state.running").waitFor();
  await page.waitForFunction(() => {
    const bar = document.querySelector("tr.job .bar");
    return bar && Number(bar.getAttribute("aria-valuenow")) > 0;
  });
  await second.locator("button[data-cancel]").click();
  await second.locator(".state.cancelled").waitFor();
  await page.locator("#log .terminal", { hasText: "[CANCELLED]" }).waitFor();
  // The model stays ready: the cancelled attempt replaced none of its files.
  await page.locator(`tr[data-model="${REPO}"] .state.ready`).waitFor();

  if (pageErrors.length) throw new Error(`the page reported errors: ${pageErrors.join("; ")}`);
  await page.screenshot({ path: join(args.artifacts, "dashboard.png"), fullPage: true });
  console.log(`ok: bar went through ${partial.length} partial values to 100%, model ready, cancel works and leaves it ready; ` +
              `screenshot in ${join(args.artifacts, "dashboard.png")}`);
} catch (error) {
  console.error(`FAILED: ${error.message}`);
  for (const p of processes) console.error(`--- output of ${p.child.spawnfile}:\n${p.output()}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  for (const p of processes) p.child.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
}
