// Writes a repo of N small regular files (100 B to 2 KiB) under <www>/bench/<repo>/resolve/<commit>
// and its listing at <www>/api/models/bench/<repo>/revision/main, with each file's git blob
// SHA-1 as the Hub gives it. Usage: node many_files.mjs <www> <repo> <commit> <count>
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync, existsSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";

const [www, repo, commit, countText] = process.argv.slice(2);
const count = Number(countText);
const root = join(www, "bench", repo, "resolve", commit);
const siblings = [];
let seed = 12345;
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
for (let i = 0; i < count; i++) {
  // 100 folders of files, like a dataset of shards or a repo of many tokenizer pieces.
  const path = `part-${String(i % 100).padStart(3, "0")}/file-${String(i).padStart(6, "0")}.json`;
  const size = 100 + Math.floor(random() * 1948);
  const content = Buffer.alloc(size, String.fromCharCode(97 + (i % 26)));
  content.write(`{"i":${i}}`);
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, content);
  const blob = createHash("sha1").update(`blob ${size}\0`).update(content).digest("hex");
  siblings.push({ rfilename: path, size, blobId: blob });
}
const main = join(www, "bench", repo, "resolve", "main");
if (!existsSync(main)) symlinkSync(commit, main);
const listing = join(www, "api", "models", "bench", repo, "revision", "main");
mkdirSync(dirname(listing), { recursive: true });
writeFileSync(listing, JSON.stringify({ id: `bench/${repo}`, sha: commit, siblings }));
