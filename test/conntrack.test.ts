import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type DaemonProcess, startDaemon, tempDir, waitUntil } from './support/daemon.js';
import { closedPort, tcpServer } from './support/servers.js';

// What an operator sees when conntrack(8) is not there or fails. The connection counts
// (status, /metrics, drain) come from one `conntrack -L` per interval. A conntrack that
// fails on demand cannot be had from the real tool as root, so a script stands in for it
// here: it fails, then prints a real `conntrack -L` line. The real tool is exercised by
// test/drain.test.ts and test/admin.test.ts in network namespaces.

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A real `conntrack -L` line for a flow DNATed to backend mark 0x101 (257). */
const FLOW_LINE =
  'tcp      6 431999 ESTABLISHED src=10.0.0.9 dst=10.0.0.10 sport=40000 dport=25 src=10.0.1.21 dst=10.0.0.9 sport=25 dport=40000 [ASSURED] mark=257 use=1';

async function farm(
  conntrackPath: string,
  backends?: (serverPort: number) => string,
): Promise<{ daemon: DaemonProcess; stateFile: string }> {
  const tmp = tempDir('nfh-conntrack-');
  cleanups.push(tmp.cleanup);
  const server = await tcpServer((s) => s.end());
  cleanups.push(() => server.close());
  const stateFile = path.join(tmp.dir, 'state.json');
  const configPath = path.join(tmp.dir, 'config.yaml');
  writeFileSync(
    configPath,
    // fall 3: these tests are about conntrack, not health; one check slowed past its timeout on
    // a busy machine must not take mail1 down (its reap would be one more conntrack call).
    `defaults: { interval: 200ms, fastInterval: 100ms, timeout: 150ms, rise: 1, fall: 3 }
log: { level: info, format: json }
stateFile: ${stateFile}
conntrackPath: ${conntrackPath}
writer: { type: condition, dir: ${tmp.dir} }
services:
  - name: mail
    port: 25
    check: { type: tcp }
    backends:
${backends?.(server.port) ?? `      - { name: mail1, address: 127.0.0.1, port: ${server.port} }`}
`,
  );
  const daemon = startDaemon(['run', '-c', configPath]);
  cleanups.push(async () => {
    daemon.kill();
    await daemon.exited;
  });
  return { daemon, stateFile };
}

const connectionsOf = (stateFile: string): number | undefined => {
  try {
    const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { backends: { connections?: number }[] };
    return state.backends[0]?.connections;
  } catch {
    return undefined; // not written yet, or being replaced
  }
};

describe('conntrack(8) missing or failing', () => {
  it('not installed: one info line naming the package; checks and the kernel side go on', async () => {
    const tmp = tempDir('nfh-conntrack-none-');
    cleanups.push(tmp.cleanup);
    const missing = path.join(tmp.dir, 'no-such-conntrack');
    const { daemon, stateFile } = await farm(missing);
    const line = await daemon.waitForLine((l) => l.event === 'conntrack_missing');
    expect(line.level).toBe('info');
    expect(line.msg).toContain(`${missing} not found`);
    expect(line.msg).toContain('install conntrack');
    // Three state-file writes later (one counting attempt per write period): still one line.
    const writes = new Set<string>();
    await waitUntil(
      () => {
        try {
          writes.add((JSON.parse(readFileSync(stateFile, 'utf8')) as { writtenAt: string }).writtenAt);
        } catch {
          // being replaced
        }
        return writes.size;
      },
      (n) => n >= 4,
    );
    expect((JSON.parse(readFileSync(stateFile, 'utf8')) as { backends: { state: string }[] }).backends[0]!.state).toBe(
      'up',
    );
    expect(daemon.lines.filter((l) => l.event === 'conntrack_missing')).toHaveLength(1);
    expect(daemon.lines.filter((l) => l.event === 'conntrack_failed')).toHaveLength(0);
    expect(connectionsOf(stateFile)).toBeUndefined();
  });

  it('failing: one error line per episode with its stderr, however many calls fail; recovered when it works again, counts shown', async () => {
    const tmp = tempDir('nfh-conntrack-fail-');
    cleanups.push(tmp.cleanup);
    const tool = path.join(tmp.dir, 'conntrack');
    const calls = path.join(tmp.dir, 'calls');
    const install = (body: string) => {
      // Replaced whole (rename), so the daemon never runs a half-written script.
      const next = `${tool}.next`;
      writeFileSync(next, `#!/bin/sh\n${body}\n`);
      chmodSync(next, 0o755);
      renameSync(next, tool);
    };
    install(
      `echo "$1" >> ${calls}; echo "conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted" >&2; exit 1`,
    );
    // mail2 refuses: it goes down, and its flows are reaped with `conntrack -D`, which fails
    // with another message than the `-L` of the counts: the same episode all the same.
    const closed = await closedPort();
    const { daemon, stateFile } = await farm(
      tool,
      (port) => `      - { name: mail1, address: 127.0.0.1, port: ${port} }
      - { name: mail2, address: 127.0.0.1, port: ${closed} }`,
    );
    const failed = await daemon.waitForLine((l) => l.event === 'conntrack_failed');
    expect(failed.level).toBe('error');
    expect(failed.msg).toContain('Operation not permitted');
    expect(failed.msg).toContain('CAP_NET_ADMIN');
    await daemon.waitForLine((l) => l.event === 'transition' && l.backend === 'mail2' && l.state === 'down');
    // The tool keeps failing the same way: reaps (-D) and two counts (-L) after them.
    await waitUntil(
      () => {
        try {
          return readFileSync(calls, 'utf8').trim().split('\n');
        } catch {
          return [];
        }
      },
      (c) => c.includes('-D') && c.slice(c.indexOf('-D')).filter((x) => x === '-L').length >= 2,
    );
    expect(daemon.lines.filter((l) => l.event === 'conntrack_failed')).toHaveLength(1);
    expect(connectionsOf(stateFile)).toBeUndefined();

    install(`echo '${FLOW_LINE}'; echo "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown." >&2`);
    await daemon.waitForLine((l) => l.event === 'conntrack_recovered');
    expect(
      await waitUntil(
        () => connectionsOf(stateFile),
        (n) => n === 1,
      ),
    ).toBe(1);
    expect(daemon.lines.filter((l) => l.event === 'conntrack_failed')).toHaveLength(1);
  });

  it('a hundred backends down at once: their flows are reaped two conntrack calls at a time', async () => {
    const tmp = tempDir('nfh-conntrack-reap-');
    cleanups.push(tmp.cleanup);
    const tool = path.join(tmp.dir, 'conntrack');
    const calls = path.join(tmp.dir, 'calls');
    // -L: no flows. -D: one line when it starts and one when it ends (O_APPEND: whole lines).
    writeFileSync(
      tool,
      `#!/bin/sh\ncase "$1" in -D) echo "start $$ $*" >> ${calls}; sleep 0.05; echo "end $$" >> ${calls}; echo "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted." >&2; exit 1;; esac\n`,
    );
    chmodSync(tool, 0o755);
    const port = await closedPort();
    const backends = Array.from(
      { length: 100 },
      (_, i) => `      - { name: b${i}, address: 127.0.0.1, port: ${port} }`,
    ).join('\n');
    const { daemon } = await farm(tool, () => backends);
    // Two calls per backend (UDP flows, unanswered SYNs): 200 different ones, each ended.
    const asked = (lines: string[]) =>
      new Set(
        lines
          .filter((l) => l.startsWith('start '))
          .map((l) => `${/-p (\w+)/.exec(l)?.[1]} ${/--mark (\d+)/.exec(l)?.[1]}`),
      );
    const lines = await waitUntil(
      () => {
        try {
          return readFileSync(calls, 'utf8').trim().split('\n');
        } catch {
          return [];
        }
      },
      (l) => asked(l).size >= 200 && l.filter((x) => x.startsWith('end ')).length * 2 >= l.length,
      45_000,
    );
    let running = 0;
    let most = 0;
    for (const line of lines) {
      running += line.startsWith('start ') ? 1 : -1;
      most = Math.max(most, running);
    }
    expect(most).toBe(2);
    expect(asked(lines).size).toBe(200);
    expect(daemon.lines.filter((l) => l.event === 'conntrack_failed')).toHaveLength(0);
  });
});
