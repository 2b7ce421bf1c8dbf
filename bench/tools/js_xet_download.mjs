// Scenario 9's peer: the official @huggingface/hub client downloading one Xet file (its XetBlob:
// token, v2 reconstruction, ranged xorb fetches) into a file. Prints the wall time in seconds.
//
//   node bench/tools/js_xet_download.mjs <hub url> <org/name> <path> <revision> <output file>
import { createWriteStream } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { downloadFile } from "@huggingface/hub";

const [hubUrl, repo, path, revision, output] = process.argv.slice(2);
const started = process.hrtime.bigint();
const blob = await downloadFile({ repo: { type: "model", name: repo }, path, revision, hubUrl, xet: true });
if (!blob) throw new Error(`${repo}/${path} not found`);
await pipeline(Readable.fromWeb(blob.stream()), createWriteStream(output));
console.log((Number(process.hrtime.bigint() - started) / 1e9).toFixed(3));
