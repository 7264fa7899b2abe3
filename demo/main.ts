import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSmtpServer } from './smtp-server.js';

/**
 * `npm run demo`: two SMTP backends on loopback, the real daemon (`nf-healthd run`)
 * writing into a temp folder, and a script that stops mail2 and brings it back, so
 * both transitions show within half a minute. No root needed. Ctrl-C ends it.
 */
const STOP_AT = 6_000;
const START_AT = 16_000;
const seconds = Number(process.env.DEMO_SECONDS ?? 0); // 0: run until Ctrl-C

const dir = mkdtempSync(path.join(tmpdir(), 'nf-healthd-demo-'));
const conditions = path.join(dir, 'nf_condition');
const mail1 = createSmtpServer({ banner: 'mail1.demo ESMTP' });
const mail2 = createSmtpServer({ banner: 'mail2.demo ESMTP' });
await mail1.start();
await mail2.start();

const config = `# written by npm run demo
defaults:
  interval: 1s
  fastInterval: 250ms
  timeout: 500ms
  rise: 2
  fall: 2
initialState: up
stateFile: ${path.join(dir, 'state.json')}
log:
  format: pretty
writer:
  type: condition
  dir: ${conditions}
  upValue: 0
services:
  - name: mail
    vip: 10.0.0.1
    port: 25
    check:
      type: smtp
    backends:
      - name: mail1
        address: 127.0.0.1
        port: ${mail1.port}
        condition: mail1up
      - name: mail2
        address: 127.0.0.1
        port: ${mail2.port}
        condition: mail2up
`;
const configFile = path.join(dir, 'config.yaml');
writeFileSync(configFile, config);
await import('node:fs/promises').then((fs) => fs.mkdir(conditions));

const say = (text: string) => process.stdout.write(`\x1b[1m[demo]\x1b[0m ${text}\n`);
say(`backends: mail1 on 127.0.0.1:${mail1.port}, mail2 on 127.0.0.1:${mail2.port}`);
say(`condition folder: ${conditions} (0 = up, as the recipe's "! --condition" rules expect)`);
say(`config: ${configFile}`);

const bin = fileURLToPath(new URL('../../bin/nf-healthd.js', import.meta.url));
const daemon = spawn(process.execPath, [bin, 'run', '-c', configFile], { stdio: ['ignore', 'inherit', 'inherit'] });

let shown = '';
const showFolder = () => {
  let now: string;
  try {
    now = readdirSync(conditions)
      .sort()
      .map((f) => `${f}=${readFileSync(path.join(conditions, f), 'latin1').trim()}`)
      .join('  ');
  } catch {
    return;
  }
  if (now !== shown && now !== '') {
    shown = now;
    say(`condition files: ${now}`);
  }
};
const watcher = setInterval(showFolder, 100);

const timers = [
  setTimeout(() => {
    say('stopping mail2 (its port now refuses connections)...');
    void mail2.stop();
  }, STOP_AT),
  setTimeout(() => {
    say('starting mail2 again on the same port...');
    void mail2.start();
  }, START_AT),
];

let cleaned = false;
const cleanup = async () => {
  if (cleaned) return;
  cleaned = true;
  timers.forEach(clearTimeout);
  clearInterval(watcher);
  daemon.kill('SIGTERM');
  await new Promise((resolve) => (daemon.exitCode !== null ? resolve(null) : daemon.once('exit', resolve)));
  await Promise.all([mail1.stop(), mail2.stop()]);
  rmSync(dir, { recursive: true, force: true });
  say('done: daemon stopped, backends closed, temp folder removed');
};
process.on('SIGINT', () => void cleanup());
process.on('SIGTERM', () => void cleanup());
daemon.on('exit', () => void cleanup());
if (seconds > 0) setTimeout(() => void cleanup(), seconds * 1000);
else setTimeout(() => say('both transitions shown; the daemon keeps checking. Ctrl-C to stop.'), START_AT + 3_000);
