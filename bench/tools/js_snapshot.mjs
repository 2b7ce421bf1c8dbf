// Scenario 3's sequential client: the official @huggingface/hub snapshotDownload, pointed at the
// benchmark's nginx mirror. Prints the wall time in seconds.
//
//   node bench/tools/js_snapshot.mjs <hub url> <org/name> <cache dir>
//
// The mirror is static: it cannot answer paths-info from a POST body, so the fetch hook (the
// library's own extension point) turns "POST …/paths-info/<rev> {paths:[p]}" into a GET of the
// precomputed answer for p (mirror_api.mjs). Every other request goes out unchanged.
import { snapshotDownload } from "@huggingface/hub";

const [hubUrl, repo, cacheDir] = process.argv.slice(2);

async function staticMirrorFetch(input, init = {}) {
  const url = typeof input === "string" ? input : input.url;
  if (init.method === "POST" && url.includes("/paths-info/")) {
    const { paths } = JSON.parse(init.body);
    if (paths.length !== 1) throw new Error("the static mirror answers paths-info for one path at a time");
    const { method, body, ...rest } = init;
    return fetch(`${url.split("?")[0]}/${paths[0]}`, rest);
  }
  return fetch(input, init);
}

const started = process.hrtime.bigint();
await snapshotDownload({ repo: { type: "model", name: repo }, hubUrl, cacheDir, fetch: staticMirrorFetch });
console.log((Number(process.hrtime.bigint() - started) / 1e9).toFixed(3));
