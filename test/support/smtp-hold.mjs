// Holds COUNT (default 1) connections to HOST:PORT open from inside the client's
// namespace, opened one after another. Prints {"conn": i, "banner": "..."} once
// connection i is greeted; then for each line "i" on stdin (an empty line: 0) sends
// "EHLO hold" on connection i and prints {"conn": i, "reply": "..."}, or
// {"conn": i, "error": "ECONNRESET"} when the connection ends (one JSON object per line).
// Without COUNT the objects carry no "conn" (one connection: nothing to tell apart).
import net from 'node:net';
import readline from 'node:readline';

const [host, port, countArg] = process.argv.slice(2);
const count = Number(countArg ?? 1);
const say = (o) => process.stdout.write(`${JSON.stringify(countArg === undefined ? { ...o, conn: undefined } : o)}\n`);
const sockets = [];

/** Opens connection `conn`; resolves once it is greeted or has failed. */
function open(conn) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(port) });
    sockets[conn] = socket;
    socket.setEncoding('latin1');
    let buffer = '';
    let greeted = false;
    let failed = false;
    socket.on('data', (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!greeted) {
          greeted = true;
          say({ conn, banner: line.split(' ')[1] });
          resolve();
        } else say({ conn, reply: line });
      }
    });
    socket.on('error', (err) => {
      failed = true;
      say({ conn, error: err.code ?? err.message });
      resolve();
    });
    socket.on('close', () => {
      if (!failed) say({ conn, error: 'CLOSED' });
      resolve();
    });
  });
}

for (let conn = 0; conn < count; conn++) await open(conn);
readline
  .createInterface({ input: process.stdin })
  .on('line', (line) => sockets[Number(line) || 0]?.write('EHLO hold\r\n'))
  .on('close', () => process.exit(0));
