import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../../demo/smtp-server.js';
import { parseDuration } from '../../src/config/duration.js';
import type { Snapshot } from '../../src/ops/snapshot.js';
import { loopbackMailYaml, smtpFarmYaml } from '../support/config.js';
import { type DaemonProcess, type LogLine, startDaemon, tempDir, waitUntil } from '../support/daemon.js';
import { type FaultyTool, faultyTool, type NftLab, nftLab } from '../support/faulty-tool.js';
import { cleanupNetns, createNetns, type Netns, tempFolder } from '../support/netns.js';
import { startSmtp } from '../support/servers.js';

/*
 * Signals at bad moments: a storm of SIGHUPs, SIGTERM in the middle of a reload, SIGTERM
 * while the writer's tool is in the middle of a transaction. The daemon stays up and
 * ends with the last config, or exits 0 within the unit's TimeoutStopSec with the kernel
 * holding what it logged. Real SMTP backends on loopback; the kernel side is a condition
 * folder (the storm) or a real nft set in a namespace of the test's own, written through
 * a deliberately slow `nft` (test/support/faulty-tool.ts).
 */

const servers: SmtpServer[] = [];
let daemon: DaemonProcess | undefined;
afterEach(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  daemon = undefined;
});
afterAll(async () => {
  for (const s of servers) await s.stop();
  cleanupNetns();
});

/** systemd/nf-healthd.service's TimeoutStopSec: how long systemd waits before SIGKILL. */
function unitStopTimeoutMs(): number {
  const unit = readFileSync(new URL('../../systemd/nf-healthd.service', import.meta.url), 'utf8');
  const value = /^TimeoutStopSec=(\S+)$/m.exec(unit)?.[1];
  const ms = value === undefined ? undefined : parseDuration(value);
  if (ms === undefined) throw new Error('no TimeoutStopSec= in systemd/nf-healthd.service');
  return ms;
}

const count = (lines: LogLine[], event: string) => lines.filter((l) => l.event === event).length;

describe('a SIGHUP storm', () => {
  it('100 SIGHUPs within a second: reloads coalesce, the daemon stays up, the last config is in force', async () => {
    const tmp = tempDir('nfh-faults-hup-');
    try {
      const cond = path.join(tmp.dir, 'cond');
      mkdirSync(cond);
      const [a, b, c] = [await startSmtp(servers), await startSmtp(servers), await startSmtp(servers)];
      const config = path.join(tmp.dir, 'config.yaml');
      const farm = (backends: { name: string; port: number }[]) =>
        smtpFarmYaml({
          timing: 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 1, fall: 3',
          conditionDir: cond,
          stateFile: path.join(tmp.dir, 'state.json'),
          extra: 'log: { level: debug, format: json }',
          backends,
        });
      writeFileSync(
        config,
        farm([
          { name: 'mail1', port: a!.port },
          { name: 'mail2', port: b!.port },
        ]),
      );
      daemon = startDaemon(['run', '-c', config]);
      await daemon.waitForLine((l) => l.event === 'ready', 30_000);
      const from = daemon.lines.length;
      // The last config: mail2 out, mail3 in.
      writeFileSync(
        config,
        farm([
          { name: 'mail1', port: a!.port },
          { name: 'mail3', port: c!.port },
        ]),
      );
      for (let i = 0; i < 100; i++) {
        daemon.kill('SIGHUP');
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, 100));
      }
      // Every reload started is finished: as many `reloaded` as `reloading` lines.
      await waitUntil(
        () => daemon!.lines.slice(from),
        (lines) => count(lines, 'reloading') > 0 && count(lines, 'reloaded') === count(lines, 'reloading'),
        20_000,
      );
      const lines = daemon.lines.slice(from);
      const reloads = count(lines, 'reloaded');
      expect(reloads).toBeGreaterThan(0);
      expect(reloads).toBeLessThan(100);
      expect(lines.filter((l) => l.event === 'backend_added').map((l) => l.backend)).toEqual(['mail3']);
      expect(lines.filter((l) => l.event === 'backend_removed').map((l) => l.backend)).toEqual(['mail2']);
      expect(count(lines, 'reload_rejected')).toBe(0);
      // Still up, checking the last config's backends, writing mail3's condition.
      const after = daemon.lines.length;
      for (const backend of ['mail1', 'mail3'])
        await daemon.waitForLine((l) => l.event === 'check' && l.backend === backend, 10_000, after);
      await waitUntil(() => existsSync(path.join(cond, 'mail3')), Boolean);
      // SIGUSR2 (HAProxy's reload, keepalived's stats): said and ignored, not Node's default exit.
      const beforeUsr2 = daemon.lines.length;
      daemon.kill('SIGUSR2');
      const ignored = await daemon.waitForLine((l) => l.event === 'signal_ignored', 10_000, beforeUsr2);
      expect(ignored).toMatchObject({ level: 'warn', signal: 'SIGUSR2' });
      expect(daemon.child.exitCode).toBeNull();
      expect(daemon.lines.slice(after).some((l) => l.event === 'check' && l.backend === 'mail2')).toBe(false);
    } finally {
      daemon?.kill('SIGKILL');
      await daemon?.exited;
      tmp.cleanup();
    }
  });
});

describe('SIGTERM at a bad moment, with a slow nft', () => {
  let ns: Netns;
  let dir: string;
  let tool: FaultyTool;
  let lab: NftLab;
  let where: string[];
  const ports: number[] = [];
  const backends: SmtpServer[] = [];

  const yaml = (names: string[], stateFile: string) =>
    loopbackMailYaml({
      timing: 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 1, fall: 1',
      writer: '{ type: nft, commandTimeout: 8s }',
      stateFile,
      extra: 'initialState: kernel',
      backends: names.map((name) => ({ name, port: ports[Number(name.slice(4)) - 1]! })),
    });

  beforeAll(async () => {
    ns = createNetns('fsig');
    dir = tempFolder('nfh-faults-sig-');
    for (let i = 0; i < 3; i++) backends.push(await startSmtp(servers));
    ports.push(...backends.map((b) => b.port));
    lab = await nftLab(ns, yaml(['mail1', 'mail2', 'mail3'], path.join(dir, 'state.json')));
    where = lab.where;
    // Start with the set empty: what the daemon writes is all that is in it.
    await ns.run(['nft', 'flush', 'set', ...where]);
    tool = faultyTool(dir, 'nft', ns);
  });

  const members = () => lab.members();

  /** The latest state each backend was logged in (transition, or added by a reload), by name. */
  function logged(lines: LogLine[]): Record<string, boolean> {
    const out: Record<string, boolean> = {};
    for (const l of lines) {
      if ((l.event === 'transition' || l.event === 'backend_added') && typeof l.backend === 'string')
        out[l.backend] = l.state === 'up';
    }
    return out;
  }

  async function startWith(names: string[]): Promise<string> {
    tool.set('pass');
    const config = path.join(dir, `config-${names.length}.yaml`);
    writeFileSync(config, yaml(names, path.join(dir, 'state.json')));
    daemon = startDaemon(['run', '-c', config], { PATH: tool.binDir });
    await daemon.waitForLine((l) => l.event === 'ready', 30_000);
    return config;
  }

  /** Waits for a slow nft call of `kind` (`-f`: a write, `-j`: a read) started after call `from`. */
  async function slowCall(kind: string, from: number): Promise<void> {
    await waitUntil(
      () => tool.calls().slice(from),
      (calls) => calls.some((c) => c.startsWith(`slow ${kind}`)),
      20_000,
    );
  }

  /**
   * SIGTERM, then: exit 0 within TimeoutStopSec; the last state file (written after the
   * last write) has every backend's value confirmed in the kernel, agreeing with the log
   * and with the set itself. Returns what the set holds, by backend.
   */
  async function stopsCleanly(): Promise<Record<string, boolean>> {
    const d = daemon!;
    const sent = performance.now();
    d.kill('SIGTERM');
    const exit = await d.exited;
    const tookMs = performance.now() - sent;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(tookMs).toBeLessThan(unitStopTimeoutMs());
    const state = JSON.parse(readFileSync(path.join(dir, 'state.json'), 'utf8')) as Snapshot;
    expect(state.stoppedAt).toBeDefined();
    const inSet = await members();
    const kernel: Record<string, boolean> = {};
    for (const b of state.backends) {
      kernel[b.backend] = inSet[Number(b.backend.slice(4)) - 1]!;
      expect(b.written).toMatchObject({ up: b.state === 'up', confirmed: true });
      expect(kernel[b.backend]).toBe(b.state === 'up');
    }
    for (const [name, up] of Object.entries(logged(d.lines))) expect(kernel[name]).toBe(up);
    return kernel;
  }

  it('during a reload (the new backend read from the kernel by a slow nft): the reload ends, then the stop', async () => {
    const config = await startWith(['mail1', 'mail2']);
    await waitUntil(members, (m) => m[0] === true && m[1] === true);
    writeFileSync(config, yaml(['mail1', 'mail2', 'mail3'], path.join(dir, 'state.json')));
    tool.set('slow');
    const calls = tool.calls().length;
    const from = daemon!.lines.length;
    daemon!.kill('SIGHUP');
    await daemon!.waitForLine((l) => l.event === 'reloading', 10_000, from);
    await slowCall('-j', calls);
    expect(Object.keys(await stopsCleanly())).toEqual(['mail1', 'mail2', 'mail3']);
    const lines = daemon!.lines.slice(from).map((l) => l.event);
    expect(lines.indexOf('reloaded')).toBeGreaterThan(-1);
    expect(lines.indexOf('stopping')).toBeGreaterThan(-1);
  });

  it('while nft is in the middle of a transaction: the write finishes, nothing is lost', async () => {
    await startWith(['mail1', 'mail2', 'mail3']);
    await waitUntil(members, (m) => m.every(Boolean));
    tool.set('slow');
    const calls = tool.calls().length;
    const from = daemon!.lines.length;
    await backends[0]!.stop();
    try {
      await daemon!.waitForLine((l) => l.event === 'transition' && l.backend === 'mail1', 10_000, from);
      await slowCall('-f', calls);
      expect(await stopsCleanly()).toEqual({ mail1: false, mail2: true, mail3: true });
    } finally {
      await backends[0]!.start();
    }
  });
});
