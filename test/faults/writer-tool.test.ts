import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SmtpServer } from '../../demo/smtp-server.js';
import { loopbackMailYaml } from '../support/config.js';
import { type DaemonProcess, type LogLine, startDaemon } from '../support/daemon.js';
import { type FaultyTool, faultyTool, type NftLab, nftLab } from '../support/faulty-tool.js';
import { cleanupNetns, createNetns, type Netns, tempFolder } from '../support/netns.js';
import { startSmtp } from '../support/servers.js';

/*
 * What the host can do to the writer's tool: `nft` hangs, exits 1, is killed by a signal,
 * is not on PATH, is killed in the middle of a call, or dies after committing. The real
 * nft and a real set, in a namespace this test made; the daemon runs outside it and finds
 * `nft` through PATH, where a wrapper (test/support/faulty-tool.ts) either runs the real
 * one inside the namespace or misbehaves as the test switches it. For every fault: the
 * failure is logged with its cause, the kernel keeps its old value, the checks go on,
 * and once the tool works again the kernel holds what the daemon wants.
 */

let ns: Netns;
let tool: FaultyTool;
let daemon: DaemonProcess;
const servers: SmtpServer[] = [];
let marks: string[];
let where: string[];
let lab: NftLab;

beforeAll(async () => {
  ns = createNetns('ftool');
  const dir = tempFolder('nfh-faults-tool-');
  servers.push(await startSmtp([]), await startSmtp([]));
  const text = loopbackMailYaml({
    timing: 'interval: 300ms, fastInterval: 100ms, timeout: 250ms, rise: 1, fall: 1',
    writer: '{ type: nft, commandTimeout: 3s }',
    stateFile: path.join(dir, 'state.json'),
    backends: servers.map((s, i) => ({ name: `mail${i + 1}`, port: s.port })),
  });
  lab = await nftLab(ns, text);
  marks = lab.marks;
  where = lab.where;
  tool = faultyTool(dir, 'nft', ns);
  const config = path.join(dir, 'config.yaml');
  writeFileSync(config, text);
  // PATH holds only the wrapper's folder: with the wrapper taken away, no other nft is found.
  daemon = startDaemon(['run', '-c', config], { PATH: tool.binDir });
  await daemon.waitForLine((l) => l.event === 'ready', 30_000);
  await inKernel([true, true]);
});

afterAll(async () => {
  daemon?.kill('SIGKILL');
  await daemon?.exited;
  for (const s of servers) await s.stop();
  cleanupNetns();
});

const members = () => lab.members();

/** Polls the real set until it holds `want` (mail1, mail2). */
async function inKernel(want: boolean[], ms = 30_000): Promise<void> {
  const deadline = performance.now() + ms;
  let got = await members();
  while (JSON.stringify(got) !== JSON.stringify(want)) {
    if (performance.now() > deadline)
      throw new Error(`the set holds ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
    await new Promise((r) => setTimeout(r, 50));
    got = await members();
  }
}

const about = (i: number) => (l: LogLine) => String(l.target).endsWith(` element ${marks[i]}`);

/** mail1 is up now: stop its server (wanted down), or start it again (wanted up). */
let mail1Up = true;
async function flipMail1(): Promise<boolean> {
  if (mail1Up) await servers[0]!.stop();
  else await servers[0]!.start();
  mail1Up = !mail1Up;
  return mail1Up;
}

/** Checks of mail2 complete after line `from`: the schedule goes on whatever the writer does. */
async function checksGoOn(from: number): Promise<void> {
  const isCheck = (l: LogLine) => l.event === 'check' && l.backend === 'mail2';
  const first = await daemon.waitForLine(isCheck, 10_000, from);
  await daemon.waitForLine(isCheck, 10_000, daemon.lines.indexOf(first) + 1);
}

/**
 * Breaks the tool (`breakTool`), makes mail1 change state, and checks what the daemon
 * says and does while broken; then mends it and waits for the kernel to follow.
 */
async function faultThenRepair(
  breakTool: () => void,
  mend: () => void,
): Promise<{ failed: LogLine; callsAtMend: number }> {
  breakTool();
  const from = daemon.lines.length;
  const want = await flipMail1();
  const failed = await daemon.waitForLine((l) => l.event === 'write_failed' && about(0)(l), 30_000, from);
  expect(failed.level).toBe('error');
  await daemon.waitForLine((l) => l.event === 'transition' && l.backend === 'mail1', 10_000, from);
  await checksGoOn(daemon.lines.length);
  const callsAtMend = tool.calls().length;
  mend();
  const mended = daemon.lines.length;
  await inKernel([want, true]);
  // The daemon knows it: the episode's end is logged (one line), and no write fails after it.
  await daemon.waitForLine((l) => l.event === 'write_recovered' && about(0)(l), 30_000, from);
  await checksGoOn(daemon.lines.length);
  expect(daemon.lines.slice(mended).filter((l) => l.event === 'write_failed' && about(0)(l)).length).toBeLessThan(2);
  return { failed, callsAtMend };
}

describe('the nft tool misbehaves, then works again', () => {
  it('hangs: killed at commandTimeout (ETIMEDOUT), the set keeps its old value, then repaired', async () => {
    const { failed } = await faultThenRepair(
      () => tool.set('hang'),
      () => tool.set('pass'),
    );
    expect(failed).toMatchObject({ code: 'ETIMEDOUT' });
    expect(failed.msg).toMatch(/did not finish within 3000ms/);
  });

  it('exits 1: its own words in the log, then repaired', async () => {
    const { failed } = await faultThenRepair(
      () => tool.set('fail'),
      () => tool.set('pass'),
    );
    expect(failed).toMatchObject({ code: 'EFAILED' });
    expect(failed.msg).toMatch(/nft: simulated failure/);
  });

  it('is killed by a signal: "killed by SIGKILL", then repaired', async () => {
    const { failed } = await faultThenRepair(
      () => tool.set('signal'),
      () => tool.set('pass'),
    );
    expect(failed.msg).toMatch(/nft: killed by SIGKILL/);
  });

  it('is not on PATH: "cannot run nft"; the set flushed meanwhile is repaired too', async () => {
    const { failed } = await faultThenRepair(
      () => tool.remove(),
      () => {
        tool.restore();
      },
    );
    expect(failed).toMatchObject({ code: 'ENOENT' });
    expect(failed.msg).toMatch(/cannot run nft: install nftables or set writer\.nftPath/);
    // Someone flushes the set while nft is away again: the read-back repairs it when it is back.
    tool.remove();
    const from = daemon.lines.length;
    await ns.run(['nft', 'flush', 'set', ...where]);
    await daemon.waitForLine((l) => l.event === 'write_failed', 30_000, from);
    tool.restore();
    await inKernel([mail1Up, true]);
  });

  it('is killed in the middle of a call: nothing half-applied, then repaired', async () => {
    const from = daemon.lines.length;
    const failed = faultThenRepair(
      () => tool.set('held'),
      () => tool.set('pass'),
    );
    // The call is under way (the wrapper sleeps before nft runs): kill it as an operator or the OOM killer would.
    let pid: number | undefined;
    const deadline = performance.now() + 20_000;
    while ((pid = tool.heldPid()) === undefined && performance.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(pid).toBeDefined();
    // Before the kill the set still holds the old value: nft's transaction is all or nothing.
    expect((await members())[0]).toBe(!mail1Up);
    process.kill(pid!, 'SIGKILL');
    const line = (await failed).failed;
    expect(line.msg).toMatch(/killed by SIGKILL/);
    expect(daemon.lines.slice(from).some((l) => l.event === 'write_failed')).toBe(true);
  });

  it('commits and dies before it reports: the daemon reads the set back, finds it right', async () => {
    const { failed, callsAtMend } = await faultThenRepair(
      () => tool.set('commit-then-die'),
      () => tool.set('pass'),
    );
    expect(failed.msg).toMatch(/killed by SIGKILL/);
    // What the dead call committed is found by reading the set (the balancing table, whose
    // content is unknown after a failure, is flushed and filled again by design: src/kernel/loop.ts).
    expect(
      tool
        .calls()
        .slice(callsAtMend)
        .some((c) => /^pass -j list set /.test(c)),
    ).toBe(true);
  });
});
