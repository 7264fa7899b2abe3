// A backend for test/drain: a TCP echo server that greets with its name, and a UDP
// server that answers every datagram with its name. Every accepted connection is
// reported on stdout ({"accepted": peer address}) so a test can see checks arrive. A
// connection reset before Node accepted it has no peer address any more (getpeername
// fails on it): it is reported as {"accepted": "reset"}. The daemon's TCP check resets
// right after the handshake, so on a busy machine many of its checks arrive that way.
// Usage: node drain-backend.mjs NAME TCP_PORT UDP_PORT
import dgram from 'node:dgram';
import net from 'node:net';

const [name, tcpPort, udpPort] = process.argv.slice(2);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const tcp = net.createServer((socket) => {
  say({ accepted: socket.remoteAddress ?? 'reset' });
  socket.on('error', () => undefined);
  socket.write(`${name}\n`);
  socket.pipe(socket);
});
const udp = dgram.createSocket('udp4');
udp.on('message', (_msg, from) => udp.send(name, from.port, from.address));
tcp.listen(Number(tcpPort), '0.0.0.0', () => udp.bind(Number(udpPort), '0.0.0.0', () => say({ listening: name })));
