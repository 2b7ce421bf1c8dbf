// End to end: the hive's cache is a Hugging Face cache (DESIGN §16), as the official JS client
// (@huggingface/hub, pinned in package-lock.json) reads and writes one.
//
//   1. hive A downloads a model from the Hub fixture into root R; scanCacheDir(R) lists it with
//      its revision and ref and no warnings; snapshotDownload and downloadFileToCacheDir into R
//      fetch no file byte (the JS client finds every file in place).
//   2. the JS client puts the same model into a fresh root R2 (through hive A's /hf mirror, so
//      the fixture sends nothing); hive C, pointed at R2 and the fixture, adopts those blobs.
// The fixture's own count of content bytes proves it: the model's bytes, sent once (step 1).
//
//   node tests/hub_clients/store_js_test.mjs --hive build/hive/rbee-hive \
//        --fixture build/tests/rbee-hub-fixture

import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { downloadFileToCacheDir, scanCacheDir, snapshotDownload } from "@huggingface/hub";
import { check, failures, runJob, startFixture, startHive } from "../support/harness.mjs";

const { values: args } = parseArgs({
  options: { hive: { type: "string" }, fixture: { type: "string" } },
});
const REPO = "org/store";
const FILES = { "model.Q4_K_M.gguf": 3145731, "config.json": 613, "tokenizer/tokenizer.json": 4099 };
const MODEL_BYTES = Object.values(FILES).reduce((a, b) => a + b, 0);

// The fixture prints its count of content bytes sent when it stops.
async function stopFixture() {
  const exited = new Promise((resolve) => fixture.child.on("exit", resolve));
  fixture.child.kill("SIGTERM");
  await exited;
  const match = fixture.output().match(/content bytes sent (\d+)/);
  return match ? Number(match[1]) : -1;
}

const home = mkdtempSync(join(tmpdir(), "rbee-store-js-"));
const fixture = startFixture(args.fixture,
  ["--repo", REPO, "--lfs-file", "model.Q4_K_M.gguf:3145731", "--file", "config.json:613",
    "--file", "tokenizer/tokenizer.json:4099"]);
const hives = [];
try {
  const upstream = await fixture.ready;
  const root = join(home, "models");
  const hiveA = startHive(args.hive, { home, cacheDir: root, upstream });
  hives.push(hiveA);
  const base = await hiveA.ready;

  // 1. The hive downloads; the JS client reads its cache.
  await runJob(base, { operation: "model_download", model: REPO });
  const model = await (await fetch(`${base}/v1/models/${REPO}`)).json();
  const scan = await scanCacheDir(root);
  check(scan.warnings.length === 0, `scanCacheDir warned: ${scan.warnings.map(String).join("; ")}`);
  const repo = scan.repos.find((r) => r.id.name === REPO && r.id.type === "model");
  check(repo !== undefined, `scanCacheDir does not list ${REPO}: ${JSON.stringify(scan.repos)}`);
  if (repo) {
    check(repo.revisions.length === 1, `revisions: ${repo.revisions.length}`);
    const revision = repo.revisions[0];
    check(revision.commitOid === model.commit, `commit ${revision.commitOid} vs ${model.commit}`);
    check(revision.refs.includes("main"), `refs: ${revision.refs}`);
    // This client's scanSnapshotDir lists a snapshot's top folder only (huggingface_hub's
    // walks it all): the two files at the top, and their bytes.
    check(revision.files.length === 2, `files: ${revision.files.length}`);
    const top = FILES["model.Q4_K_M.gguf"] + FILES["config.json"];
    check(repo.size === top, `size ${repo.size}, expected ${top}`);
    check(revision.path === model.path, `snapshot ${revision.path} vs the catalog's ${model.path}`);
  }
  const hubUrl = `${base}/hf`;
  const snapshot = await snapshotDownload({ repo: { type: "model", name: REPO }, hubUrl, cacheDir: root });
  check(snapshot === model.path, `snapshotDownload answered ${snapshot}, the hive has ${model.path}`);
  const pointer = await downloadFileToCacheDir({
    repo: { type: "model", name: REPO }, path: "config.json", hubUrl, cacheDir: root,
  });
  check(pointer === join(model.path, "config.json"), `downloadFileToCacheDir answered ${pointer}`);
  check(lstatSync(pointer).isSymbolicLink() && readlinkSync(pointer).startsWith("../../blobs/"),
    "the hive's link was replaced");

  // 2. The JS client writes a cache; another hive adopts it.
  const root2 = join(home, "js-models");
  const written = await snapshotDownload({ repo: { type: "model", name: REPO }, hubUrl, cacheDir: root2 });
  const hiveC = startHive(args.hive, { home, cacheDir: root2, upstream });
  hives.push(hiveC);
  const baseC = await hiveC.ready;
  await runJob(baseC, { operation: "model_download", model: REPO });
  const modelC = await (await fetch(`${baseC}/v1/models/${REPO}`)).json();
  check(modelC.status === "ready", `hive C's model is ${modelC.status}`);
  for (const path of Object.keys(FILES)) {
    check(readFileSync(join(modelC.path, path)).equals(readFileSync(join(written, path))),
      `hive C's ${path} differs from the JS client's`);
  }
  const scan2 = await scanCacheDir(root2);
  check(scan2.warnings.length === 0, `scanCacheDir(R2) warned: ${scan2.warnings.map(String).join("; ")}`);

  const sent = await stopFixture();
  check(sent === MODEL_BYTES,
    `the fixture sent ${sent} content bytes; the model's ${MODEL_BYTES} once was expected`);
} catch (error) {
  check(false, error.stack ?? error);
} finally {
  for (const hive of hives) hive.child.kill("SIGTERM");
  fixture.child.kill("SIGTERM");
  rmSync(home, { recursive: true, force: true });
}
if (failures() === 0) console.log("ok: the JS client reads the hive's cache, the hive adopts the JS client's");
process.exit(failures() === 0 ? 0 : 1);
