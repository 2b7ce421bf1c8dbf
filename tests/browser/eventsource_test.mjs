// End to end: a standard EventSource client we did not write (the npm `eventsource` package,
// pinned in package-lock.json) against the real rbee-hive. After the terminal event the stream
// ends; the client reconnects with Last-Event-ID, the hive answers 204 No Content, and the
// client stops for good instead of reconnecting for ever.
//
//   node tests/browser/eventsource_test.mjs --hive build/hive/rbee-hive

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { EventSource } from "eventsource";

const { values: args } = parseArgs({ options: { hive: { type: "string" } } });
const TIMEOUT = 20_000;

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
}

const home = mkdtempSync(join(tmpdir(), "rbee-eventsource-"));
const hive = spawn(args.hive, ["--port", "0", "--cache-dir", join(home, "models")], {
  env: { ...process.env, HOME: home, HF_HOME: join(home, "hf"), HF_ENDPOINT: "http://127.0.0.1:9" },
  stdio: ["ignore", "ignore", "pipe"],
});
try {
  const base = await new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error(`the hive did not start:\n${output}`)), TIMEOUT);
    hive.stderr.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/Listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
  });
  const submitted = await fetch(`${base}/v1/jobs`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ operation: "model_list", hive_id: "localhost" }),
  }).then((r) => r.json());

  const source = new EventSource(`${base}${submitted.sse_url}`);
  let opens = 0;
  const data = [];
  source.addEventListener("open", () => { opens += 1; });
  source.addEventListener("message", (event) => data.push(event.data));
  const closed = await new Promise((resolve) => {
    const started = Date.now();
    const poll = setInterval(() => {
      if (source.readyState === EventSource.CLOSED || Date.now() - started > TIMEOUT) {
        clearInterval(poll);
        resolve(source.readyState === EventSource.CLOSED);
      }
    }, 50);
  });
  source.close();
  if (!closed) fail(`the client still reconnects after [DONE] (${opens} opens in ${TIMEOUT} ms)`);
  if (opens !== 1) fail(`expected one successful connection, saw ${opens}`);
  if (data.at(-1) !== "[DONE]") fail(`the last data line was ${JSON.stringify(data.at(-1))}`);
  if (!JSON.parse(data[0]).job_id) fail("the first event is not a narration of the job");
  if (process.exitCode !== 1) {
    console.log(`ok: ${data.length} events, one connection, stopped after [DONE] with 204`);
  }
} finally {
  hive.kill("SIGTERM");
  rmSync(home, { recursive: true, force: true });
}
