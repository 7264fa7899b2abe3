// Opens COUNT connections one after another to HOST:PORT from inside the client's
// namespace, reads each greeting and says QUIT. Prints JSON:
//   {"answers": {"<first word after 220>": n, ...}, "failures": ["ECONNREFUSED", ...]}
import net from 'node:net';

const [host, port, count, timeoutMs] = process.argv.slice(2);

function greet() {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(port) });
    let buffer = '';
    const done = (result) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ error: 'TIMEOUT' }), Number(timeoutMs));
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      const line = buffer.slice(0, nl).trim();
      socket.end('QUIT\r\n');
      done(line.startsWith('220 ') ? { banner: line.split(' ')[1] } : { error: `BAD ${line.slice(0, 40)}` });
    });
    socket.on('error', (err) => done({ error: err.code ?? err.message }));
    socket.on('end', () => done({ error: 'CLOSED' }));
  });
}

const answers = {};
const failures = [];
for (let i = 0; i < Number(count); i++) {
  const r = await greet();
  if (r.banner) answers[r.banner] = (answers[r.banner] ?? 0) + 1;
  else failures.push(r.error);
}
process.stdout.write(`${JSON.stringify({ answers, failures })}\n`);
