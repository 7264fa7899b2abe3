import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSmtpServer, type SmtpServer } from '../demo/smtp-server.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import { cli } from './support/cli.js';
import { type DaemonProcess, startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { closedPort, httpServer, restartable } from './support/servers.js';

/*
 * The security review as tests, against the built daemon as a child process: where it
 * listens (read from the kernel with `ss`, not from its log), the state file's mode,
 * what the exec check and the hooks see of the daemon's environment, and that secrets
 * written in the config appear in no output a user or another local account can read.
 */

let tmp: ReturnType<typeof tempDir>;
let daemon: DaemonProcess | undefined;
let smtp: SmtpServer;
beforeEach(async () => {
  tmp = tempDir('nfh-security-');
  chmodSync(tmp.dir, 0o755);
  smtp = restartable(createSmtpServer());
  await smtp.start();
});
afterEach(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  daemon = undefined;
  await smtp.stop();
  tmp.cleanup();
});

/** A secret nobody else could have written: if it shows up anywhere, it came from the config. */
const SECRET = `s3cret-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
/** In the daemon's own environment: must not reach the programs it starts. */
const DAEMON_ONLY = `daemon-only-${process.pid}`;

function writeConfig(body: string): string {
  const file = path.join(tmp.dir, 'config.yaml');
  writeFileSync(file, body);
  return file;
}

/** A program that leaves its environment in `file` (written, then renamed: complete when seen). */
function envRecorder(name: string): { program: string; file: string } {
  const program = path.join(tmp.dir, `${name}.sh`);
  const file = path.join(tmp.dir, `${name}.env`);
  writeFileSync(program, `#!/bin/sh\nenv > "${file}.tmp" && mv "${file}.tmp" "${file}"\necho recorded\n`);
  chmodSync(program, 0o755);
  return { program, file };
}

/** The environment a recorder left, once it has. */
async function recorded(file: string): Promise<Record<string, string>> {
  await waitUntil(() => existsSync(file), Boolean);
  return Object.fromEntries(
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

describe('listeners and files', () => {
  it('the HTTP listener binds 127.0.0.1 by default, and the daemon listens on nothing else', async () => {
    const cond = path.join(tmp.dir, 'cond');
    mkdirSync(cond);
    const config = writeConfig(`writer: {type: condition, dir: ${cond}}
stateFile: ${path.join(tmp.dir, 'state.json')}
http: {listen: 0}
services:
  - name: mail
    port: 25
    check: {type: smtp}
    backends: [{name: a, address: 127.0.0.1, port: ${smtp.port}}]
`);
    daemon = startDaemon(['run', '-c', config]);
    const listening = await daemon.waitForLine((l) => l.event === 'http_listening');
    await daemon.waitForLine((l) => l.event === 'ready');
    // The kernel's view: every listening TCP socket of the daemon's pid.
    const ss = await promisify(execFile)('ss', ['-Hltnp']);
    const mine = ss.stdout
      .split('\n')
      .filter((l) => l.includes(`pid=${daemon!.child.pid},`))
      .map((l) => l.split(/\s+/)[3]);
    expect(mine).toEqual([`127.0.0.1:${String(listening.port)}`]);
  });

  it('the state file is 0644 in a 0755 folder: readable for `status`, writable by the daemon alone', async () => {
    const cond = path.join(tmp.dir, 'cond');
    mkdirSync(cond);
    const stateFile = path.join(tmp.dir, 'run', 'state.json');
    const config = writeConfig(`writer: {type: condition, dir: ${cond}}
stateFile: ${stateFile}
services:
  - name: mail
    port: 25
    backends: [{name: a, address: 127.0.0.1, port: ${smtp.port}}]
`);
    daemon = startDaemon(['run', '-c', config]);
    await daemon.waitForLine((l) => l.event === 'ready');
    await waitUntil(
      () => statSync(stateFile, { throwIfNoEntry: false }),
      (s) => s !== undefined,
    );
    expect(statSync(stateFile).mode & 0o777).toBe(0o644);
    expect(statSync(path.dirname(stateFile)).mode & 0o777).toBe(0o755);
  });
});

describe('programs the daemon starts', () => {
  it('the exec check and the hooks get the facts and a PATH, not the daemon environment', async () => {
    const cond = path.join(tmp.dir, 'cond');
    mkdirSync(cond);
    const check = envRecorder('check');
    const hook = envRecorder('hook');
    const config = writeConfig(`defaults: {interval: 1s, fastInterval: 100ms, timeout: 2s, rise: 1, fall: 1}
writer: {type: condition, dir: ${cond}}
stateFile: ${path.join(tmp.dir, 'state.json')}
notify: {down: [${hook.program}]}
services:
  - name: svc
    port: 25
    backends:
      - {name: by-exec, address: 127.0.0.1, port: ${smtp.port}, check: {type: exec, command: [${check.program}], env: {CHECK_OWN: yes}}}
      - {name: gone, address: 127.0.0.1, port: ${await closedPort()}}
`);
    daemon = startDaemon(['run', '-c', config], { NFH_TEST_DAEMON_ONLY: DAEMON_ONLY });
    await daemon.waitForLine((l) => l.event === 'transition' && l.backend === 'gone');
    // Besides NFH_* and what the config gives: PATH, and PWD, which the shell sets itself.
    const others = (env: Record<string, string>) =>
      Object.keys(env)
        .filter((k) => !k.startsWith('NFH_') && k !== 'PWD')
        .sort();
    const checkEnv = await recorded(check.file);
    expect(checkEnv).toMatchObject({ NFH_BACKEND: 'by-exec', NFH_SERVICE: 'svc', NFH_ADDRESS: '127.0.0.1' });
    expect(others(checkEnv)).toEqual(['CHECK_OWN', 'PATH']);
    const hookEnv = await recorded(hook.file);
    expect(hookEnv).toMatchObject({ NFH_EVENT: 'down', NFH_BACKEND: 'gone' });
    expect(others(hookEnv)).toEqual(['PATH']);
    expect(JSON.stringify([checkEnv, hookEnv])).not.toContain(DAEMON_ONLY);
  });

  it('the exec check runs its argv without a shell: metacharacters arrive as written', async () => {
    const marker = path.join(tmp.dir, 'injected');
    const argument = `$(touch ${marker}); \`touch ${marker}\` | touch ${marker} && echo hi`;
    const result = await runCheck(
      checkSchema.parse({ type: 'exec', command: ['/bin/echo', argument] }),
      { service: 's', backend: 'b', address: '127.0.0.1', port: 1 },
      2000,
    );
    expect(result).toMatchObject({ up: true, detail: `exit 0: ${argument}` });
    expect(statSync(marker, { throwIfNoEntry: false })).toBeUndefined();
  });
});

describe('secrets in the config', () => {
  it('appear in no log line, `status`, `status --json`, /status, /metrics or the state file', async () => {
    const cond = path.join(tmp.dir, 'cond');
    mkdirSync(cond);
    const stateFile = path.join(tmp.dir, 'state.json');
    const web = await httpServer((_req, res) => res.end('ok'));
    try {
      const config = writeConfig(`defaults: {interval: 500ms, fastInterval: 100ms, timeout: 1s, rise: 1, fall: 1}
log: {level: debug, format: json}
writer: {type: condition, dir: ${cond}}
stateFile: ${stateFile}
http: {listen: 0}
services:
  - name: svc
    port: 25
    backends:
      - {name: db, address: 127.0.0.1, port: 5432, check: {type: exec, command: [/bin/sh, -c, 'test -n "$PGPASSWORD"'], env: {PGPASSWORD: ${SECRET}}}}
      - {name: web, address: 127.0.0.1, port: ${web.port}, check: {type: http, path: "/health?token=${SECRET}"}}
      - {name: down, address: 127.0.0.1, port: ${await closedPort()}, check: {type: exec, command: [/bin/false, ${SECRET}]}}
`);
      daemon = startDaemon(['run', '-c', config]);
      const listening = await daemon.waitForLine((l) => l.event === 'http_listening');
      await daemon.waitForLine((l) => l.event === 'transition' && l.backend === 'down');
      await waitUntil(
        () => (existsSync(stateFile) ? readFileSync(stateFile, 'utf8') : ''),
        (text) => text.includes('"down"'),
      );
      const base = `http://127.0.0.1:${String(listening.port)}`;
      const mark = daemon.lines.length;
      daemon.child.kill('SIGUSR1');
      await daemon.waitForLine((l) => l.event === 'state_dump', 10_000, mark);
      const outputs = {
        status: (await cli(['status', '-c', config])).stdout,
        statusJson: (await cli(['status', '-c', config, '--json'])).stdout,
        httpStatus: await (await fetch(`${base}/status`)).text(),
        metrics: await (await fetch(`${base}/metrics`)).text(),
        stateFile: readFileSync(stateFile, 'utf8'),
      };
      // Each output is really there and about these backends: an empty one would pass vacuously.
      for (const text of Object.values(outputs)) expect(text).toContain('web');
      daemon.kill('SIGTERM');
      expect((await daemon.exited).code).toBe(0);
      const logs = `${daemon.lines.map((l) => JSON.stringify(l)).join('\n')}\n${daemon.stderr()}`;
      expect(logs).toContain('state_dump');
      for (const [where, text] of Object.entries({ ...outputs, logs })) {
        expect(text.includes(SECRET), `${where} shows the secret`).toBe(false);
      }
    } finally {
      await web.close();
    }
  });
});
