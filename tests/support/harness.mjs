// What the node end-to-end tests share: counting failed checks, starting the hive and the Hub
// fixture as processes, running a hive job to its end. No npm package: each test's own
// node_modules holds the client it tests.

import { spawn } from "node:child_process";

export const TIMEOUT = 30_000;

let failed = 0;
export function check(condition, message) {
  if (!condition) {
    console.error(`FAIL: ${message}`);
    failed += 1;
  }
}
export const failures = () => failed;

// Starts a process; `ready` resolves with the first match of `pattern` in its output on
// `stream`, `output()` is all it printed there so far.
export function start(command, argv, env, pattern, stream) {
  const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} did not start:\n${output}`)), TIMEOUT);
    child[stream].on("data", (chunk) => {
      output += chunk;
      const match = output.match(pattern);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
  });
  return { child, ready, output: () => output };
}

// The Hub fixture with these arguments; `ready` resolves with its endpoint.
export function startFixture(binary, argv) {
  return start(binary, argv, {}, /endpoint (http:\/\/127\.0\.0\.1:\d+)/, "stdout");
}

// A hive on `cacheDir` whose Hub is `upstream`; `ready` resolves with its base URL.
export function startHive(binary, { home, cacheDir, upstream, flags = [] }) {
  return start(binary, ["--port", "0", "--cache-dir", cacheDir, ...flags],
    { HOME: home, HF_HOME: `${home}/hf`, HF_ENDPOINT: upstream, HF_TOKEN: "" },
    /Listening on (http:\/\/127\.0\.0\.1:\d+)/, "stderr");
}

// Submits a job and waits for its end (failing when it fails); returns the job and the payload
// of its data event.
export async function runJob(base, body) {
  const { job_id: id } = await (await fetch(`${base}/v1/jobs`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  })).json();
  const deadline = Date.now() + TIMEOUT;
  let job;
  for (;;) {
    job = await (await fetch(`${base}/v1/jobs/${id}`)).json();
    if (job.state === "completed") break;
    if (job.state === "failed" || job.state === "cancelled" || Date.now() > deadline) {
      throw new Error(`job ${id}: ${JSON.stringify(job)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const stream = await (await fetch(`${base}/v1/jobs/${id}/stream`, {
    headers: { Accept: "text/event-stream" },
  })).text();
  const events = stream.split("\n").filter((line) => line.startsWith("data: {"))
    .map((line) => JSON.parse(line.slice(6)));
  return { job, data: events.find((event) => event.type === "data")?.payload };
}
