// A TCP proxy that holds every chunk for a fixed delay in each direction, so a server on
// loopback answers like one a round trip away (netem is not available on every kernel). Order
// is kept (every chunk waits the same), bandwidth is not limited.
//
//   node bench/tools/latency_proxy.mjs <listen port> <target port> <round trip ms>
import net from "node:net";

const [listenPort, targetPort, roundTripMs] = process.argv.slice(2).map(Number);
const oneWay = roundTripMs / 2;

function delayed(from, to) {
  from.on("data", (chunk) => setTimeout(() => to.write(chunk), oneWay));
  from.on("end", () => setTimeout(() => to.end(), oneWay));
  from.on("error", () => to.destroy());
}

net.createServer((client) => {
  const server = net.connect(targetPort, "127.0.0.1");
  client.setNoDelay(true);
  server.setNoDelay(true);
  delayed(client, server);
  delayed(server, client);
}).listen(listenPort, "127.0.0.1", () => console.log(`listening ${listenPort}`));
