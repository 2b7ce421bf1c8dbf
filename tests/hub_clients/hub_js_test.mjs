// End to end: the official Hugging Face JS client (@huggingface/hub, pinned in
// package-lock.json) downloads a model from the hive's /hf mirror, which has to pull it from its
// own upstream (the Hub fixture) first. snapshotDownload and downloadFile must produce the
// fixture's exact bytes, and the pull must be an ordinary, visible job of the hive.
//
//   node tests/hub_clients/hub_js_test.mjs --hive build/hive/rbee-hive \
//        --fixture build/tests/rbee-hub-fixture

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { downloadFile, snapshotDownload } from "@huggingface/hub";
import { check, failures, startFixture, startHive } from "../support/harness.mjs";

const { values: args } = parseArgs({
  options: { hive: { type: "string" }, fixture: { type: "string" } },
});
const REPO = "org/js";
const FILES = ["model.Q4_K_M.gguf", "config.json", "tokenizer/tokenizer.json"];

const home = mkdtempSync(join(tmpdir(), "rbee-hub-js-"));
const fixture = startFixture(args.fixture,
  ["--repo", REPO, "--lfs-file", `${FILES[0]}:3145731`, "--file", `${FILES[1]}:613`, "--file", `${FILES[2]}:4099`]);
let hive;
try {
  const upstream = await fixture.ready;
  hive = startHive(args.hive, { home, cacheDir: join(home, "models"), upstream });
  const base = await hive.ready;
  const hubUrl = `${base}/hf`;
  const truth = async (path) =>
    Buffer.from(await (await fetch(`${upstream}/${REPO}/resolve/main/${path}`)).arrayBuffer());

  // snapshotDownload: model info, the recursive tree, paths-info and resolve, all from /hf.
  const snapshot = await snapshotDownload({
    repo: { type: "model", name: REPO }, hubUrl, cacheDir: join(home, "js-cache"),
  });
  for (const path of FILES) {
    const bytes = readFileSync(join(snapshot, path));
    check(bytes.equals(await truth(path)), `snapshotDownload: ${path} differs from the Hub's bytes`);
  }

  // downloadFile: one file, read through the client's own response.
  const blob = await downloadFile({ repo: { type: "model", name: REPO }, path: FILES[0], hubUrl });
  check(blob !== null, "downloadFile returned nothing");
  if (blob) {
    const bytes = Buffer.from(await blob.arrayBuffer());
    check(bytes.equals(await truth(FILES[0])), "downloadFile: the bytes differ from the Hub's");
  }

  // The hive pulled the model through an ordinary job, and has it now.
  const jobs = (await (await fetch(`${base}/v1/jobs`)).json()).jobs;
  check(jobs.some((job) => job.request.pull_through === true),
    `no pull-through job in /v1/jobs: ${JSON.stringify(jobs.map((job) => job.request))}`);
} catch (error) {
  check(false, error.stack ?? error);
} finally {
  hive?.child.kill("SIGTERM");
  fixture.child.kill("SIGTERM");
  rmSync(home, { recursive: true, force: true });
}
if (failures() === 0) console.log("ok: snapshotDownload and downloadFile through the hive's /hf mirror");
process.exit(failures() === 0 ? 0 : 1);
