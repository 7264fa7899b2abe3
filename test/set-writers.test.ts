import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipsetWriterSchema, nftWriterSchema } from '../src/config/writers.js';
import { renderRules } from '../src/kernel/rules/command.js';
import { runCommand } from '../src/kernel/writers/command.js';
import { createIpsetWriter } from '../src/kernel/writers/ipset.js';
import { createNftWriter, parseNftSetJson } from '../src/kernel/writers/nft.js';
import type { Writer, WriterTarget } from '../src/kernel/writers/types.js';
import { parsePlan } from '../src/plan/load.js';
import { cleanupNetns, createNetns, type Netns, tempFolder } from './support/netns.js';

// The writers against real ipset and nftables sets in a namespace of our own. The
// writers run their binary through a two-line wrapper that enters the namespace
// (writer.ipsetPath / writer.nftPath), and that logs each call so the batching shows.

const yaml = (writer: string) => `
writer: ${writer}
services:
  - name: mail
    vip: 10.0.0.1
    port: 25
    backends:
      - { name: mail1, address: 192.168.0.1 }
      - { name: mail2, address: 192.168.0.2 }
      - { name: mail3, address: 192.168.0.3 }
`;

let ns: Netns;
let dir: string;
beforeAll(() => {
  ns = createNetns('writers');
  dir = tempFolder('nfh-writers-');
});
afterAll(() => cleanupNetns());

function calls(log: string): string[] {
  try {
    return readFileSync(log, 'utf8').trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

async function states(writer: Writer, targets: WriterTarget[]): Promise<(boolean | string | undefined)[]> {
  const read = await writer.read(targets);
  return targets.map((t) => {
    const r = read.get(t.key)!;
    return 'error' in r ? r.error.code : r.up;
  });
}

describe('ipset writer', () => {
  it('agrees with the rules, flips membership in one restore per batch, repairs a flush, explains errors', async () => {
    const config = parsePlan(yaml('{ type: ipset }'));
    const targets = config.backends.map((b) => b.target);
    expect(targets.map((t) => t.key)).toEqual(['nfh-mail1 10.0.0.1', 'nfh-mail2 10.0.0.1', 'nfh-mail3 10.0.0.1']);
    const log = path.join(dir, 'ipset.calls');
    const options = ipsetWriterSchema.parse({ type: 'ipset', ipsetPath: ns.wrapper(dir, '/usr/sbin/ipset', log) });
    const writer = createIpsetWriter(options);

    // Before the rules: no sets, and the hint says what to do.
    const missing = await writer.read(targets.slice(0, 1));
    const error = (missing.get(targets[0]!.key) as { error: NodeJS.ErrnoException }).error;
    expect(error.code).toBe('ENOENT');
    expect(writer.hint(error, targets[0]!)).toContain('load the rules first');

    await ns.run(['ipset', 'restore', '-exist'], renderRules(config, 'ipset'));
    expect(await states(writer, targets)).toEqual([true, true, true]);

    writeFileSync(log, '');
    const failed = await writer.write([
      { target: targets[0]!, up: false },
      { target: targets[1]!, up: false },
      { target: targets[2]!, up: true },
    ]);
    expect(failed.size).toBe(0);
    expect(calls(log)).toEqual(['restore -exist']);
    expect(await states(writer, targets)).toEqual([false, false, true]);
    expect(calls(log).slice(1)).toEqual(['list -o save']); // one listing for the whole batch

    // Idempotent: the same wishes again change nothing and fail nothing.
    expect(
      (
        await writer.write([
          { target: targets[0]!, up: false },
          { target: targets[2]!, up: true },
        ])
      ).size,
    ).toBe(0);
    expect(await states(writer, targets)).toEqual([false, false, true]);

    // `ipset flush` behind the writer's back: read-back sees it.
    await ns.run(['ipset', 'flush', 'nfh-mail3']);
    expect(await states(writer, targets.slice(2))).toEqual([false]);

    // One bad target in a batch: the others still apply, the bad one is named.
    const ghost = { key: 'nfh-ghost 10.0.0.1', label: 'ipset nfh-ghost 10.0.0.1' };
    const mixed = await writer.write([
      { target: targets[2]!, up: true },
      { target: ghost, up: true },
      { target: targets[0]!, up: true },
    ]);
    expect([...mixed.keys()]).toEqual([ghost.key]);
    expect(mixed.get(ghost.key)!.code).toBe('ENOENT');
    expect(await states(writer, targets)).toEqual([true, false, true]);

    // A binary that is not there: a hint about the path, no throw.
    const nowhere = createIpsetWriter({ ...options, ipsetPath: '/nonexistent/ipset' });
    const spawnFailed = (await nowhere.write([{ target: targets[0]!, up: true }])).get(targets[0]!.key)!;
    expect(nowhere.hint(spawnFailed, targets[0]!)).toContain('install ipset or set writer.ipsetPath');
  });
});

describe('as an unprivileged user', () => {
  // setpriv drops root: the same binaries, as nobody, in the namespace; with
  // `netAdmin` nobody keeps CAP_NET_ADMIN as an ambient capability, as the systemd unit grants.
  const asNobody = (binary: string, netAdmin = false) => {
    const file = path.join(dir, `nobody-${netAdmin ? 'netadmin-' : ''}${path.basename(binary)}`);
    const caps = netAdmin ? ' --inh-caps=+net_admin --ambient-caps=+net_admin' : '';
    writeFileSync(
      file,
      `#!/bin/sh\nexec ip netns exec ${ns.name} setpriv --reuid=65534 --regid=65534 --clear-groups${caps} ${binary} "$@"\n`,
      { mode: 0o755 },
    );
    return file;
  };

  it('both writers work with CAP_NET_ADMIN alone', async () => {
    const ipsetConfig = parsePlan(yaml('{ type: ipset, setPrefix: cap- }'));
    await ns.run(['ipset', 'restore', '-exist'], renderRules(ipsetConfig, 'ipset'));
    const ipsetTargets = ipsetConfig.backends.map((b) => b.target);
    const ipset = createIpsetWriter(
      ipsetWriterSchema.parse({ type: 'ipset', setPrefix: 'cap-', ipsetPath: asNobody('/usr/sbin/ipset', true) }),
    );
    expect((await ipset.write([{ target: ipsetTargets[1]!, up: false }])).size).toBe(0);
    expect(await states(ipset, ipsetTargets)).toEqual([true, false, true]);

    const nftConfig = parsePlan(yaml('{ type: nft, table: captest }'));
    await ns.run(['nft', '-f', '-'], renderRules(nftConfig, 'nft'));
    const nftTargets = nftConfig.backends.map((b) => b.target);
    const nft = createNftWriter(
      nftWriterSchema.parse({ type: 'nft', table: 'captest', nftPath: asNobody('/usr/sbin/nft', true) }),
    );
    expect((await nft.write([{ target: nftTargets[0]!, up: false }])).size).toBe(0);
    expect(await states(nft, nftTargets)).toEqual([false, true, true]);
  });

  it('without it both writers report EPERM and say which capability is missing', async () => {
    const ipsetConfig = parsePlan(yaml('{ type: ipset }'));
    const ipsetTarget = ipsetConfig.backends[0]!.target;
    const ipset = createIpsetWriter(ipsetWriterSchema.parse({ type: 'ipset', ipsetPath: asNobody('/usr/sbin/ipset') }));
    const ipsetError = (await ipset.write([{ target: ipsetTarget, up: true }])).get(ipsetTarget.key)!;
    expect(ipsetError.code).toBe('EPERM');
    expect(ipset.hint(ipsetError, ipsetTarget)).toContain('CAP_NET_ADMIN');

    const nftConfig = parsePlan(yaml('{ type: nft }'));
    const nftTarget = nftConfig.backends[0]!.target;
    const nft = createNftWriter(nftWriterSchema.parse({ type: 'nft', nftPath: asNobody('/usr/sbin/nft') }));
    const read = (await nft.read([nftTarget])).get(nftTarget.key) as { error: NodeJS.ErrnoException };
    expect(read.error.code).toBe('EPERM');
    expect(nft.hint(read.error, nftTarget)).toContain('CAP_NET_ADMIN');
  });
});

describe('nft writer', () => {
  it('agrees with the rules, adds and removes idempotently in one transaction, sees a table reload', async () => {
    const config = parsePlan(yaml('{ type: nft }'));
    const targets = config.backends.map((b) => b.target);
    expect(targets.map((t) => t.key)).toEqual(['0x101', '0x102', '0x103']);
    expect(targets[0]!.label).toBe('nft set inet nfh up element 0x101');
    const log = path.join(dir, 'nft.calls');
    const options = nftWriterSchema.parse({ type: 'nft', nftPath: ns.wrapper(dir, '/usr/sbin/nft', log) });
    const writer = createNftWriter(options);

    const missing = (await writer.read(targets)).get(targets[0]!.key) as { error: NodeJS.ErrnoException };
    expect(missing.error.code).toBe('ENOENT');
    expect(writer.hint(missing.error, targets[0]!)).toContain('load the rules first');

    const rules = renderRules(config, 'nft');
    await ns.run(['nft', '-f', '-'], rules);
    expect(await states(writer, targets)).toEqual([true, true, true]);

    writeFileSync(log, '');
    const down = [
      { target: targets[0]!, up: false },
      { target: targets[1]!, up: false },
    ];
    expect((await writer.write(down)).size).toBe(0);
    // Removing what is already gone must not fail (nft 1.0.6: add, then delete).
    expect((await writer.write(down)).size).toBe(0);
    expect((await writer.write([{ target: targets[2]!, up: true }])).size).toBe(0);
    expect(calls(log)).toEqual(['-f -', '-f -', '-f -']);
    expect(await states(writer, targets)).toEqual([false, false, true]);

    // Reloading the table resets the set to what the rules say (all up).
    await ns.run(['nft', '-f', '-'], rules);
    expect(await states(writer, targets)).toEqual([true, true, true]);

    // A transaction that cannot apply fails every change in it, with the reason.
    await ns.run(['nft', 'delete', 'table', 'inet', 'nfh']);
    const failed = await writer.write([{ target: targets[0]!, up: true }]);
    expect(failed.get(targets[0]!.key)!.code).toBe('ENOENT');
  });
});

describe('nft listing', () => {
  it('reads plain elements and elements with flags (counters, timeouts)', () => {
    const plain = '{"nftables": [{"metainfo": {}}, {"set": {"name": "up", "type": "mark", "elem": [257, 514]}}]}';
    expect([...parseNftSetJson(plain)!]).toEqual([257, 514]);
    const flagged =
      '{"nftables": [{"set": {"name": "up", "elem": [{"elem": {"val": 257, "counter": {"packets": 0}}}]}}]}';
    expect([...parseNftSetJson(flagged)!]).toEqual([257]);
    expect([...parseNftSetJson('{"nftables": [{"set": {"name": "up"}}]}')!]).toEqual([]);
    expect(parseNftSetJson('{"nftables": [{"metainfo": {}}]}')).toBeUndefined();
  });
});

describe('writer commands', () => {
  it('are killed past their timeout and past their output bound, and never started through a shell', async () => {
    const started = performance.now();
    await expect(runCommand('sleep', ['5'], { timeoutMs: 150, maxOutput: 1000 })).rejects.toMatchObject({
      code: 'ETIMEDOUT',
    });
    expect(performance.now() - started).toBeLessThan(4000);
    await expect(runCommand('yes', [], { timeoutMs: 5000, maxOutput: 64 * 1024 })).rejects.toMatchObject({
      code: 'E2BIG',
    });
    // An argument with shell syntax is one argv entry, printed back as is.
    const echoed = await runCommand('printf', ['%s', '$(id); `id` | x'], { timeoutMs: 5000, maxOutput: 1000 });
    expect(echoed).toEqual({ code: 0, signal: null, stdout: '$(id); `id` | x', stderr: '' });
  });

  it('a hanging ipset is reported with its timeout, and the writer carries on', async () => {
    const hang = path.join(dir, 'hanging-ipset');
    writeFileSync(hang, '#!/bin/sh\nexec sleep 5\n', { mode: 0o755 });
    const writer = createIpsetWriter(
      ipsetWriterSchema.parse({ type: 'ipset', ipsetPath: hang, commandTimeout: '200ms' }),
    );
    const target = { key: 'nfh-mail1 10.0.0.1', label: 'ipset nfh-mail1 10.0.0.1' };
    const error = (await writer.write([{ target, up: true }])).get(target.key)!;
    expect(error.code).toBe('ETIMEDOUT');
    expect(writer.hint(error, target)).toContain('did not finish within 200ms');
  });
});
