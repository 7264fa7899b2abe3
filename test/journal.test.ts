import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSmtpServer } from '../demo/smtp-server.js';
import { createLogger, resolveLogFormat } from '../src/log.js';
import { startDaemon, tempDir } from './support/daemon.js';

/*
 * journald priorities: with stdout on the journal every line starts with the
 * sd-daemon(3) prefix of its level. The real journal reading them is checked in
 * test/systemd.test.ts (journalctl -p warning, PRIORITY fields); here the lines themselves.
 */

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function capture(format: 'journal' | 'json' | 'auto') {
  const lines: string[] = [];
  const log = createLogger({ level: 'debug', format, destination: { write: (l: string) => void lines.push(l) } });
  return { log, lines };
}

describe('log format', () => {
  it('journal: <3> error, <4> warn, <6> info, <7> debug, then the JSON line without a timestamp', () => {
    const { log, lines } = capture('journal');
    log.error('e');
    log.warn('w');
    log.info('i');
    log.debug('d');
    expect(lines.map((l) => l.slice(0, 3))).toEqual(['<3>', '<4>', '<6>', '<7>']);
    expect(JSON.parse(lines[1]!.slice(3))).toEqual({ level: 'warn', msg: 'w' });
  });

  it('auto means journal when JOURNAL_STREAM is set, JSON lines otherwise; an explicit format wins', () => {
    expect(resolveLogFormat('auto', { JOURNAL_STREAM: '8:12345' })).toBe('journal');
    expect(resolveLogFormat('auto', {})).toBe('json');
    expect(resolveLogFormat('json', { JOURNAL_STREAM: '8:12345' })).toBe('json');
    expect(resolveLogFormat('pretty', { JOURNAL_STREAM: '8:12345' })).toBe('pretty');
    const { log, lines } = capture('json');
    log.warn('w');
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'warn', msg: 'w', time: expect.any(String) });
  });

  it('the daemon under JOURNAL_STREAM prefixes every line by its level', async () => {
    const tmp = tempDir('nfh-journal-');
    cleanups.push(tmp.cleanup);
    const up = createSmtpServer();
    await up.start();
    cleanups.push(() => up.stop());
    const down = createSmtpServer();
    await down.start();
    const downPort = down.port;
    await down.stop();
    mkdirSync(path.join(tmp.dir, 'cond'));
    const configPath = path.join(tmp.dir, 'config.yaml');
    writeFileSync(
      configPath,
      `defaults: {interval: 200ms, fastInterval: 100ms, timeout: 300ms, rise: 1, fall: 1}
writer: {type: condition, dir: ${path.join(tmp.dir, 'cond')}}
stateFile: ${path.join(tmp.dir, 'state.json')}
services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends:
      - {name: mail1, address: 127.0.0.1, port: ${up.port}}
      - {name: mail2, address: 127.0.0.1, port: ${downPort}}
`,
    );
    const d = startDaemon(['run', '-c', configPath], { JOURNAL_STREAM: '8:12345' });
    cleanups.push(async () => {
      d.kill('SIGKILL');
      await d.exited;
    });
    await d.waitForLine((l) => l.msg.includes('"event":"ready"'));
    d.kill('SIGTERM');
    expect((await d.exited).code).toBe(0);
    const raw = d.lines.map((l) => l.msg);
    expect(raw.every((l) => /^<[3467]>\{/.test(l))).toBe(true);
    const byEvent = new Map(raw.map((l) => [(JSON.parse(l.slice(3)) as { event?: string }).event, l.slice(0, 3)]));
    expect(byEvent.get('transition')).toBe('<4>'); // mail2 down
    expect(byEvent.get('ready')).toBe('<6>');
    expect(byEvent.get('stopping')).toBe('<6>');
  });
});
