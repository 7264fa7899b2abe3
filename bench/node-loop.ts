/**
 * The floor under nf-healthd: a bare Node loop doing the same exchange per backend
 * (connect; SMTP greeting, EHLO, QUIT; HTTP GET; or connect and reset) every interval,
 * with no daemon around it: no hysteresis, no writer, no timeouts, no bounds, no logs.
 * Run as a checker by the benchmark (`--checkers node-loop`), never in production.
 *
 *   node bench/dist/node-loop.js MODE PORT COUNT INTERVAL_MS
 */
import net from 'node:net';

const backendAddress = (i: number) => `127.1.${Math.floor(i / 250)}.${(i % 250) + 1}`;

function check(mode: string, host: string, port: number, next: () => void): void {
  let called = false;
  const done = () => {
    if (called) return;
    called = true;
    next();
  };
  const socket = net.connect({ host, port, noDelay: true });
  const finish = () => {
    socket.destroy();
    done();
  };
  socket.once('error', finish);
  if (mode === 'tcp') {
    socket.once('connect', () => {
      socket.resetAndDestroy();
      done();
    });
    return;
  }
  let seen = '';
  let step = 0;
  socket.setEncoding('latin1');
  if (mode === 'http')
    socket.once('connect', () => socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
  socket.on('data', (chunk: string) => {
    seen += chunk;
    if (mode === 'http') return;
    if (!seen.endsWith('\n')) return;
    seen = '';
    if (step === 0) socket.write('EHLO bench.invalid\r\n');
    else if (step === 1) socket.write('QUIT\r\n');
    step++;
  });
  socket.once('end', () => {
    socket.end();
  });
  socket.once('close', () => done());
}

function main(): void {
  const [mode = 'smtp', portText = '25', countText = '1', intervalText = '1000'] = process.argv.slice(2);
  const port = Number(portText);
  const interval = Number(intervalText);
  for (let i = 0; i < Number(countText); i++) {
    const host = backendAddress(i);
    const loop = () => check(mode, host, port, () => setTimeout(loop, interval * (1 - 0.1 * Math.random())));
    setTimeout(loop, Math.random() * interval);
  }
  process.on('SIGTERM', () => process.exit(0));
}

main();
