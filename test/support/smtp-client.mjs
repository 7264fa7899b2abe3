// Opens COUNT connections one after another to HOST:PORT from inside the client's
// namespace, reads each greeting and says QUIT. Prints JSON:
//   {"answers": {"<first word after 220>": n, ...}, "failures": ["ECONNREFUSED", ...]}
// COUNT `for:MS` keeps connecting for MS milliseconds and adds "timeline": [[ms, banner
// or error], ...]. SOURCES (optional, comma-separated local addresses): connection i
// binds to source i mod n, and "bySource" says which banner each source got last.
import net from 'node:net';

const [host, port, count, timeoutMs, sourceList] = process.argv.slice(2);
const sources = sourceList ? sourceList.split(',') : [];

function greet(localAddress) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(port), ...(localAddress ? { localAddress } : {}) });
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
const bySource = {};
const timeline = [];
const forMs = count.startsWith('for:') ? Number(count.slice(4)) : undefined;
const start = performance.now();
for (let i = 0; forMs === undefined ? i < Number(count) : performance.now() - start < forMs; i++) {
  const source = sources.length > 0 ? sources[i % sources.length] : undefined;
  const at = Math.round(performance.now() - start);
  const r = await greet(source);
  if (r.banner) answers[r.banner] = (answers[r.banner] ?? 0) + 1;
  else failures.push(r.error);
  if (source) bySource[source] = r.banner ?? r.error;
  if (forMs !== undefined) timeline.push([at, r.banner ?? r.error]);
}
const extra = { ...(sources.length > 0 ? { bySource } : {}), ...(forMs !== undefined ? { timeline } : {}) };
process.stdout.write(`${JSON.stringify({ answers, failures, ...extra })}\n`);
