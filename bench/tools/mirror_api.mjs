// Adds what the official JS client (@huggingface/hub) asks a Hub for, as static files beside
// the hive's listing, so nginx can serve it: the recursive tree of a revision and, per file,
// the paths-info answer.
//
//   node bench/tools/mirror_api.mjs <www root> <org/name> <commit>
//
// Reads <www>/api/models/<repo>/revision/main (written by bench/run.sh) and writes
//   <www>/api/models/<repo>/tree/<commit>                 GET ?recursive=true
//   <www>/api/models/<repo>/paths-info/<commit>/<path>    one file's [PathInfo]; the JS
//                                                         client POSTs {paths:[path]} and
//                                                         js_snapshot.mjs maps that to a GET
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

const [www, repo, commit] = process.argv.slice(2);
const api = join(www, "api/models", repo);
const listing = JSON.parse(readFileSync(join(api, "revision/main"), "utf8"));

const entries = [];
const directories = new Set();
for (const sibling of listing.siblings) {
  const parts = sibling.rfilename.split("/");
  for (let i = 1; i < parts.length; i++) directories.add(parts.slice(0, i).join("/"));
  const entry = { type: "file", oid: sibling.blobId ?? sibling.lfs.sha256, size: sibling.size, path: sibling.rfilename };
  if (sibling.lfs) entry.lfs = { oid: sibling.lfs.sha256, size: sibling.size, pointerSize: 134 };
  entries.push(entry);
  const info = join(api, "paths-info", commit, sibling.rfilename);
  mkdirSync(dirname(info), { recursive: true });
  writeFileSync(info, JSON.stringify([entry]));
}
for (const directory of [...directories].sort())
  entries.unshift({ type: "directory", oid: "0".repeat(40), size: 0, path: directory });
mkdirSync(join(api, "tree"), { recursive: true });
writeFileSync(join(api, "tree", commit), JSON.stringify(entries));
console.log(`${repo}: ${entries.length} tree entries`);
