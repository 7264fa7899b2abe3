// Holds one connection to HOST:PORT open from inside the client's namespace. Prints
// {"banner": "..."} once greeted; then for each line on stdin sends "EHLO hold" and
// prints {"reply": "..."} or {"error": "ECONNRESET"} (one JSON object per line).
import net from 'node:net';
import readline from 'node:readline';

const [host, port] = process.argv.slice(2);
const socket = net.connect({ host, port: Number(port) });
socket.setEncoding('latin1');
let buffer = '';
let greeted = false;
let failed = false;
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
socket.on('data', (chunk) => {
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, nl).trim();
    buffer = buffer.slice(nl + 1);
    if (!greeted) {
      greeted = true;
      say({ banner: line.split(' ')[1] });
    } else say({ reply: line });
  }
});
socket.on('error', (err) => {
  failed = true;
  say({ error: err.code ?? err.message });
});
socket.on('close', () => {
  if (!failed) say({ error: 'CLOSED' });
  process.exit(0);
});
readline.createInterface({ input: process.stdin }).on('line', () => socket.write('EHLO hold\r\n'));
