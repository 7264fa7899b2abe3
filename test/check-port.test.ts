import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/load.js';
import { parsePlan } from '../src/plan/load.js';
import { runCheck } from '../src/probes/run.js';
import { BIN, tempDir, waitUntil } from './support/daemon.js';
import { closedPort, tcpServer } from './support/servers.js';

// A check with its own `port` (HAProxy's `port`, keepalived's `connect_port`) probes that
// port on the backend's address; the traffic port is what the rules DNAT to. Real loopback
// servers count the connections each port gets.

const closers: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/**
 * The count once it reached `n`: the client side of a check can finish (a tcp check ends
 * at connect) before this process's server has run its accept callback.
 */
const accepted = (count: () => number, n: number) => waitUntil(count, (c) => c >= n);

/** A loopback server that counts connections and, with `banner`, greets each one. */
async function countingServer(banner?: string) {
  let connections = 0;
  const server = await tcpServer((socket) => {
    connections++;
    if (banner) socket.write(banner);
  });
  closers.push(server.close);
  return { port: server.port, connections: () => connections };
}

describe('per-check port', () => {
  it('a check with a port probes that port; one without probes the traffic port', async () => {
    const traffic = await closedPort();
    const admin = await countingServer();
    const plan = parsePlan(`
services:
  - name: mail
    port: ${traffic}
    backends:
      - { name: m1, address: 127.0.0.1, check: { type: tcp, port: ${admin.port} } }
      - { name: m2, address: 127.0.0.1 }
`);
    const [m1, m2] = plan.backends;
    expect(m1!.probe.port).toBe(traffic);
    expect(m1!.probes.map((p) => p.port)).toEqual([admin.port]);
    expect(m2!.probes).toEqual([m2!.probe]);
    const up = await runCheck(m1!.checks, m1!.probe, 2000);
    expect(up).toMatchObject({ up: true, detail: 'connected' });
    expect(await accepted(() => admin.connections(), 1)).toBe(1);
    const down = await runCheck(m2!.checks, m2!.probe, 2000);
    expect(down).toMatchObject({ up: false, detail: 'connect ECONNREFUSED' });
    expect(admin.connections()).toBe(1);
  });

  it('each of `checks` goes to its own port; one failing names itself', async () => {
    const traffic = await countingServer();
    const smtp = await countingServer('220 mx ESMTP\r\n');
    const yaml = (smtpPort: number) => `
services:
  - name: mail
    port: ${traffic.port}
    checks: [{ type: tcp }, { type: smtp, port: ${smtpPort} }]
    backends:
      - { name: m1, address: 127.0.0.1 }
`;
    const spec = parsePlan(yaml(smtp.port)).backends[0]!;
    expect(spec.probes.map((p) => p.port)).toEqual([traffic.port, smtp.port]);
    const up = await runCheck(spec.checks, spec.probe, 2000);
    expect(up).toMatchObject({ up: true, detail: 'tcp: connected; smtp: 220 mx ESMTP' });
    expect(await accepted(() => traffic.connections() + smtp.connections(), 2)).toBe(2);
    expect([traffic.connections(), smtp.connections()]).toEqual([1, 1]);

    const closed = await closedPort();
    const broken = parsePlan(yaml(closed)).backends[0]!;
    const down = await runCheck(broken.checks, broken.probe, 2000);
    expect(down).toMatchObject({ up: false, detail: 'smtp: connect ECONNREFUSED' });
  });

  it('probe shows the ports the checks went to', async () => {
    const traffic = await countingServer();
    const admin = await countingServer();
    const { dir, cleanup } = tempDir('nfh-port-');
    closers.push(cleanup);
    const file = path.join(dir, 'config.yaml');
    await writeFile(
      file,
      `services:
  - name: web
    port: ${traffic.port}
    backends:
      - { name: w1, address: 127.0.0.1, check: { type: tcp, port: ${admin.port} } }
      - { name: w2, address: 127.0.0.1, checks: [{ type: tcp }, { type: tcp, port: ${admin.port} }] }
`,
    );
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'probe', '-c', file, '--json']);
    const rows = JSON.parse(stdout) as { backend: string; port: number; ports?: number[]; up: boolean }[];
    expect(rows.map((r) => [r.backend, r.port, r.ports, r.up])).toEqual([
      ['w1', admin.port, undefined, true],
      ['w2', traffic.port, [traffic.port, admin.port], true],
    ]);
    expect(await accepted(() => traffic.connections() + admin.connections(), 3)).toBe(3);
    expect([traffic.connections(), admin.connections()]).toEqual([1, 2]);
    const table = await promisify(execFile)(process.execPath, [BIN, 'probe', '-c', file]);
    expect(table.stdout).toContain(`127.0.0.1:${traffic.port},${admin.port}`);
  });

  it('a bad port is a config error at its position', () => {
    const text = `services:
  - name: web
    port: 80
    backends:
      - { name: w1, address: 127.0.0.1, check: { type: http, port: 70000 } }
`;
    expect(() => parsePlan(text, 'web.yaml')).toThrowError(ConfigError);
    try {
      parsePlan(text, 'web.yaml');
    } catch (err) {
      expect((err as ConfigError).message).toMatch(
        /^web\.yaml:5:\d+: services\[0\]\.backends\[0\]\.check\.port: Too big: expected number to be <=65535/,
      );
    }
  });
});
