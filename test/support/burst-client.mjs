// Opens connections to HOST:PORT from inside the client's namespace without waiting for
// one to finish before the next (as many clients would), reads each SMTP greeting:
//   node burst-client.mjs HOST PORT COUNT TIMEOUT_MS            COUNT connections at once
//   node burst-client.mjs HOST PORT rate:PER_S:FOR_MS TIMEOUT_MS  PER_S a second for FOR_MS
// Prints JSON: {"startedAt": epoch ms, "answers": {"<banner word>": n}, "failures": {"<error>": n},
// "timeline": [[ms since start, banner or error], ...]} (timeline in start order).
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
    const timer = setTimeout(() => done('TIMEOUT'), Number(timeoutMs));
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      const line = buffer.slice(0, nl).trim();
      socket.end('QUIT\r\n');
      done(line.startsWith('220 ') ? `220 ${line.split(' ')[1]}` : `BAD ${line.slice(0, 40)}`);
    });
    socket.on('error', (err) => done(err.code ?? err.message));
    socket.on('end', () => done('CLOSED'));
  });
}

const startedAt = Date.now();
const start = performance.now();
const pending = [];
if (count.startsWith('rate:')) {
  const [perSecond, forMs] = count.slice(5).split(':').map(Number);
  const gap = 1000 / perSecond;
  for (let i = 0; i * gap < forMs; i++) {
    const due = start + i * gap;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const at = Math.round(performance.now() - start);
    pending.push(greet().then((r) => [at, r]));
  }
} else {
  for (let i = 0; i < Number(count); i++) pending.push(greet().then((r) => [0, r]));
}
const timeline = await Promise.all(pending);
const answers = {};
const failures = {};
for (const [, r] of timeline) {
  if (r.startsWith('220 ')) answers[r.slice(4)] = (answers[r.slice(4)] ?? 0) + 1;
  else failures[r] = (failures[r] ?? 0) + 1;
}
process.stdout.write(`${JSON.stringify({ startedAt, answers, failures, timeline })}\n`);
