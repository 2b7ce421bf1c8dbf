// Control-plane latency under load: opens N SSE watchers on a job's stream, then times
// sequential GET /health and POST /v1/jobs (model_list) requests. Prints JSON with p50/p99 (ms).
//
//   node control_plane.mjs <hive_url> <job_id> [watchers=200] [requests=500]
import http from "node:http";

const [hiveUrl, jobId, watchersArg = "200", requestsArg = "500"] = process.argv.slice(2);
const hive = new URL(hiveUrl);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const req = http.request(
      { host: hive.hostname, port: hive.port, method, path, agent,
        headers: body ? { "Content-Type": "application/json" } : {} },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
      });
    req.on("error", reject);
    if (body) req.write(body);
    req.end();
  });
}

function openWatcher() {
  return new Promise((resolve) => {
    const req = http.get({ host: hive.hostname, port: hive.port, path: `/v1/jobs/${jobId}/stream`,
                          headers: { Accept: "text/event-stream" } }, (res) => {
      let events = 0;
      res.on("data", (chunk) => { events += (chunk.toString().match(/^id: /gm) || []).length; });
      resolve({ res, count: () => events });
    });
    req.on("error", () => resolve(null));
  });
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const watchers = (await Promise.all(Array.from({ length: Number(watchersArg) }, openWatcher))).filter(Boolean);
const health = [];
const submit = [];
for (let i = 0; i < Number(requestsArg); i++) {
  health.push((await request("GET", "/health")).ms);
  if (i % 5 === 0) submit.push((await request("POST", "/v1/jobs", JSON.stringify({ operation: "model_list" }))).ms);
}
const eventsSeen = watchers.map((w) => w.count());
console.log(JSON.stringify({
  watchers: watchers.length,
  health_p50_ms: percentile(health, 50), health_p99_ms: percentile(health, 99),
  submit_p50_ms: percentile(submit, 50), submit_p99_ms: percentile(submit, 99),
  watcher_events_min: Math.min(...eventsSeen), watcher_events_max: Math.max(...eventsSeen),
}));
for (const w of watchers) w.res.destroy();
agent.destroy();
