import { readFileSync } from 'node:fs';
import type net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ConfigError } from '../src/config/load.js';
import type { Config } from '../src/config/schema.js';
import { RulesError, type RulesFormat, renderRules } from '../src/kernel/rules/command.js';
import { IPSET_LINE_PREFIX } from '../src/kernel/rules/iptables-ipset.js';
import type { Plan } from '../src/plan/compile.js';
import { parsePlan } from '../src/plan/load.js';
import { connect, DEFAULT_BOUNDS, lineConnection } from '../src/probes/connection.js';
import { checkSchema } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import { cleanupNetns, createNetns, type Netns } from './support/netns.js';
import { tcpServer } from './support/servers.js';

/*
 * Property tests with fast-check: random input where a user or a backend controls it.
 * Run counts are modest so the suite stays fast; NFH_FUZZ_RUNS=N multiplies them
 * (docs/faults.md). A failure prints the seed and the shrunk counterexample.
 */
const SCALE = Math.max(1, Number(process.env.NFH_FUZZ_RUNS ?? 1));
/** NFH_FUZZ_SEED replays the runs of a failure report (fast-check prints the seed). */
const SEED = process.env.NFH_FUZZ_SEED ? { seed: Number(process.env.NFH_FUZZ_SEED) } : {};
const runs = (n: number) => ({ numRuns: n * SCALE, ...SEED });

describe('config loader', () => {
  const example = readFileSync(new URL('../config/example.yaml', import.meta.url), 'utf8');

  /** Either a Config or a ConfigError whose every problem is located inside the text. */
  function loadsOrLocates(text: string): void {
    let config: Config | undefined;
    try {
      config = parsePlan(text, 'fuzz.yaml').config;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      expect(err.problems.length).toBeGreaterThan(0);
      const lines = text.split(/\r\n|\r|\n/).length;
      for (const p of err.problems) {
        expect(p.file).toBe('fuzz.yaml');
        expect(p.line).toBeGreaterThanOrEqual(1);
        expect(p.line).toBeLessThanOrEqual(lines + 1);
        expect(p.column).toBeGreaterThanOrEqual(1);
        expect(p.message.length).toBeGreaterThan(0);
      }
      return;
    }
    expect(config.services.length).toBeGreaterThan(0);
  }

  it('random text: a Config or a located ConfigError, never a crash', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 400 }), loadsOrLocates), runs(300));
  });

  it('the example with random edits: a Config or a located ConfigError', () => {
    const edit = fc.record({
      at: fc.nat(),
      cut: fc.nat({ max: 12 }),
      insert: fc.oneof(
        fc.constantFrom(':', ' ', '\n', '- ', '{', '}', '[', '&a ', '*a', '!!str ', '"', "'", '#', '0', 'x', '\t', '~'),
        fc.string({ maxLength: 8 }),
      ),
    });
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 6 }), (edits) => {
        let text = example;
        for (const e of edits) {
          const at = e.at % (text.length + 1);
          text = text.slice(0, at) + e.insert + text.slice(at + e.cut);
        }
        loadsOrLocates(text);
      }),
      runs(300),
    );
  });

  it('random objects of the config shape: a Config or a located ConfigError', () => {
    const scalar = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.integer({ min: -5, max: 70_000 }),
      fc.double({ noNaN: false }),
      fc.boolean(),
      fc.constant(null),
      fc.constantFrom('2s', '500ms', '0s', '1h', '127.0.0.1', 'fd00::1', 'mail1', '/tmp/x', 'smtp', 'tcp', 'nft'),
    );
    const value = fc.oneof(
      scalar,
      fc.array(scalar, { maxLength: 3 }),
      fc.dictionary(fc.string({ maxLength: 6 }), scalar),
    );
    const check = fc.oneof(
      fc.record({ type: fc.constantFrom('tcp', 'smtp', 'http', 'tls', 'expect', 'exec', 'pop3', 'nope') }),
      fc.dictionary(fc.constantFrom('type', 'ehlo', 'starttls', 'path', 'steps', 'command', 'ca'), value),
    );
    const backend = fc.record(
      {
        name: fc.oneof(fc.constantFrom('b1', 'b2', 'mail1', '../x', ''), fc.string({ maxLength: 40 })),
        address: fc.constantFrom('127.0.0.1', '192.0.2.1', 'fd00::2', 'host.example', 'not an address', ''),
        port: fc.oneof(fc.integer({ min: -1, max: 70_000 }), fc.string({ maxLength: 4 })),
        weight: fc.integer({ min: 0, max: 2000 }),
        condition: fc.string({ maxLength: 35 }),
        check,
        interval: value,
        rise: value,
      },
      { requiredKeys: [] },
    );
    const service = fc.record(
      {
        name: fc.constantFrom('mail', 'web', 'a b', ''),
        vip: fc.constantFrom('10.0.0.1', 'fd00::10', 'x'),
        port: fc.integer({ min: 0, max: 70_000 }),
        check,
        checks: fc.array(check, { maxLength: 3 }),
        backends: fc.array(backend, { maxLength: 4 }),
        timeout: value,
      },
      { requiredKeys: [] },
    );
    const config = fc.record(
      {
        defaults: fc.dictionary(
          fc.constantFrom('interval', 'timeout', 'rise', 'fall', 'fastInterval', 'downInterval'),
          value,
        ),
        initialState: fc.constantFrom('up', 'down', 'kernel', 'sideways'),
        concurrency: value,
        writer: fc.oneof(
          fc.record(
            { type: fc.constantFrom('condition', 'ipset', 'nft', 'iptables'), dir: value },
            { requiredKeys: [] },
          ),
          value,
        ),
        services: fc.oneof(fc.array(service, { maxLength: 3 }), value),
        extra: value,
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(config, (c) => loadsOrLocates(stringify(c))),
      runs(300),
    );
  });

  it('an alias bomb is a located ConfigError, not a crash', () => {
    const bomb = [
      'a: &a [x, x, x, x, x, x, x, x, x, x]',
      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
      'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]',
      'services: [*d]',
      '',
    ].join('\n');
    expect(() => parsePlan(bomb, 'bomb.yaml')).toThrow(ConfigError);
    loadsOrLocates(bomb);
  });
});

/**
 * One loopback backend that plays a script per connection: chunks of bytes, each after
 * a delay, then either closes or stays silent. The next check's script is set before it runs.
 */
interface Script {
  chunks: { bytes: Uint8Array; delayMs: number }[];
  close: boolean;
}

function scriptedBackend() {
  let next: Script = { chunks: [], close: true };
  const play = (socket: net.Socket, script: Script) => {
    socket.resume(); // what the check sends is read and dropped
    let i = 0;
    const step = () => {
      if (socket.destroyed) return;
      const chunk = script.chunks[i++];
      if (!chunk) {
        if (script.close) socket.end();
        return;
      }
      socket.write(chunk.bytes);
      const timer = setTimeout(step, chunk.delayMs);
      socket.once('close', () => clearTimeout(timer));
    };
    step();
  };
  return {
    server: tcpServer((socket) => play(socket, next)),
    set: (script: Script) => (next = script),
  };
}

/** Bytes a backend might send: protocol lines, random bytes, an over-long line; split into delayed chunks. */
const pieces = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .constantFrom(
        '220 mx ESMTP\r\n',
        '220-mx\r\n',
        '220 \r\n',
        '250-STARTTLS\r\n',
        '250 ok\r\n',
        '+OK ready\r\n',
        '* OK IMAP\r\n',
        'SSH-2.0-OpenSSH_9\r\n',
        'banner line\r\n',
        '+PONG\r\n',
        '-ERR no\r\n',
        '\r\n',
        '\n',
        '\r',
        '421 busy\r\n',
      )
      .map((s) => Buffer.from(s, 'latin1')),
  },
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 80 }) },
  { weight: 1, arbitrary: fc.integer({ min: 4000, max: 140_000 }).map((n) => Buffer.alloc(n, 0x41)) },
);

const script: fc.Arbitrary<Script> = fc
  .record({
    pieces: fc.array(pieces, { maxLength: 8 }),
    cuts: fc.array(fc.nat(), { maxLength: 6 }),
    delays: fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 60 })), { maxLength: 7 }),
    close: fc.boolean(),
  })
  .map(({ pieces, cuts, delays, close }) => {
    const all = Buffer.concat(pieces);
    const at = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
    const bounds = [0, ...at, all.length];
    const chunks = bounds
      .slice(1)
      .map((end, i) => ({ bytes: all.subarray(bounds[i]!, end), delayMs: delays[i] ?? 0 }))
      .filter((c) => c.bytes.length > 0);
    return { chunks, close };
  });

describe('line reader and conversation presets against a scripted loopback backend', () => {
  const backend = scriptedBackend();
  let port: number;
  let close: () => Promise<void>;
  beforeAll(async () => {
    ({ port, close } = await backend.server);
  });
  afterAll(() => close?.());

  const TIMEOUT = 300;
  /** Twice the timeout and a second: a bound on a loaded machine, not a timing claim. */
  const BOUND_MS = 2 * TIMEOUT + 1000;
  /** A socket read hands over up to 64 KiB at once: a byte bound is passed by at most one read. */
  const ONE_READ = 65_536;

  it('lines come out as sent (CR LF or LF), split and delayed however the backend likes', async () => {
    const line = fc.string({
      unit: fc
        .integer({ min: 0, max: 255 })
        .filter((b) => b !== 10 && b !== 13)
        .map((b) => String.fromCharCode(b)),
      maxLength: 50,
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ text: line, crlf: fc.boolean() }), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        async (lines, cuts) => {
          const all = Buffer.from(lines.map((l) => `${l.text}${l.crlf ? '\r\n' : '\n'}`).join(''), 'latin1');
          const at = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
          const bounds = [0, ...at, all.length];
          backend.set({
            chunks: bounds.slice(1).map((end, i) => ({ bytes: all.subarray(bounds[i]!, end), delayMs: i % 2 })),
            close: true,
          });
          const signal = AbortSignal.timeout(5000);
          const conn = lineConnection(
            await connect({ service: 's', backend: 'b', address: '127.0.0.1', port }, signal),
            signal,
          );
          const got: string[] = [];
          let end = '';
          try {
            for (;;) got.push(await conn.readLine());
          } catch (err) {
            end = (err as Error).message;
          } finally {
            conn.reset();
          }
          expect(got).toEqual(lines.map((l) => l.text));
          expect(end).toBe('reading: connection closed by backend');
        },
      ),
      runs(40),
    );
  });

  const presets: Record<string, Record<string, unknown>> = {
    smtp: { type: 'smtp' },
    'smtp ehlo': { type: 'smtp', ehlo: 'probe.example' },
    pop3: { type: 'pop3' },
    imap: { type: 'imap' },
    ftp: { type: 'ftp' },
    ssh: { type: 'ssh' },
    redis: { type: 'redis' },
    lmtp: { type: 'lmtp' },
    expect: {
      type: 'expect',
      steps: [{ expect: '220' }, { send: 'HELO x\r\n' }, { expectRegex: '^250', in: 'buffer' }],
      maxBytes: 1024,
    },
  };
  const caps: Record<string, number> = { ssh: 8192, expect: 1024 };

  it('every preset: a verdict within the bound, one line of detail, never more than the byte cap read', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...Object.keys(presets)), script, async (name, s) => {
        backend.set(s);
        const started = performance.now();
        const result = await runCheck(
          checkSchema.parse(presets[name]),
          { service: 's', backend: 'b', address: '127.0.0.1', port },
          TIMEOUT,
        );
        expect(performance.now() - started).toBeLessThan(BOUND_MS);
        expect(typeof result.up).toBe('boolean');
        expect(result.detail).toMatch(/^[\x20-\x7e]+$/);
        expect(result.bytesRead ?? 0).toBeLessThanOrEqual((caps[name] ?? DEFAULT_BOUNDS.maxTotalBytes) + ONE_READ);
      }),
      runs(60),
    );
  }, 120_000);
});

/** The one call into the rules renderer (its signature may change: fix it here). */
function render(plan: Plan, format: RulesFormat): string {
  return renderRules(plan, format);
}

describe('rules renderer: random valid configs load in the kernel (a namespace of our own)', () => {
  let ns: Netns;
  beforeAll(() => {
    ns = createNetns('fuzz');
  });
  afterAll(() => cleanupNetns());

  const name = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,14}$/);
  const v4 = fc
    .tuple(fc.integer({ min: 1, max: 223 }), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 }))
    .map((p) => p.join('.'));
  const v6 = fc.tuple(fc.nat(0xffff), fc.nat(0xffff)).map(([a, b]) => `fd00::${a.toString(16)}:${b.toString(16)}`);

  interface ServiceDraft {
    name: string;
    six: boolean;
    port: number;
    inInterface: string | undefined;
    backends: { name: string; weight: number; port: number | undefined }[];
  }

  /** Services of one family with unique names, 1 to 5 backends each, random weights, ports and interfaces. */
  const services = (family: 4 | 6 | 'mixed'): fc.Arbitrary<ServiceDraft[]> =>
    fc.uniqueArray(
      fc.record({
        name,
        six: family === 'mixed' ? fc.boolean() : fc.constant(family === 6),
        port: fc.integer({ min: 1, max: 65535 }),
        inInterface: fc.option(fc.stringMatching(/^[a-z][a-z0-9]{0,7}$/), { nil: undefined }),
        backends: fc.uniqueArray(
          fc.record({
            name,
            weight: fc.integer({ min: 1, max: 5 }),
            port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
          }),
          { minLength: 1, maxLength: 5, selector: (b) => b.name },
        ),
      }),
      { minLength: 1, maxLength: 3, selector: (s) => s.name },
    );

  function configOf(writer: string, list: ServiceDraft[], addr: { v4: string; v6: string }) {
    const seen = new Set<string>();
    return parsePlan(
      stringify({
        writer: { type: writer },
        initialState: 'up',
        services: list.map((s, si) => ({
          name: s.name,
          vip: s.six ? `${addr.v6}${si}` : `${addr.v4}.${si + 1}`,
          port: s.port,
          ...(s.inInterface ? { inInterface: s.inInterface } : {}),
          // Backend names are unique across the config: suffix the ones seen before.
          backends: s.backends.map((b, bi) => {
            const unique = seen.has(b.name) ? `${b.name}-${si}` : b.name;
            seen.add(unique);
            return {
              name: unique,
              address: s.six ? `fd00::a:${si}:${bi + 1}` : `10.${si}.${bi}.2`,
              weight: b.weight,
              ...(b.port ? { port: b.port } : {}),
            };
          }),
        })),
      }),
    );
  }

  it('nft: nft -c accepts the table for any mix of IPv4 and IPv6 services', async () => {
    await fc.assert(
      fc.asyncProperty(services('mixed'), v4, v6, async (list, a4, a6) => {
        const text = render(configOf('nft', list, { v4: a4.split('.').slice(0, 3).join('.'), v6: `${a6}:` }), 'nft');
        await ns.run(['nft', '-c', '-f', '-'], text);
      }),
      runs(12),
    );
  }, 120_000);

  it('iptables-ipset: the sets load with ipset restore and the rules pass iptables-restore --test', async () => {
    await fc.assert(
      fc.asyncProperty(services(4), v4, async (list, a4) => {
        let text: string;
        try {
          text = render(
            configOf('ipset', list, { v4: a4.split('.').slice(0, 3).join('.'), v6: 'fd00::' }),
            'iptables-ipset',
          );
        } catch (err) {
          // Weights whose sum needs more slots than the split has: refused in words, not rendered.
          if (err instanceof RulesError && err.problems.every((p) => p.includes('slots'))) return;
          throw err;
        }
        const sets = text
          .split('\n')
          .filter((l) => l.startsWith(IPSET_LINE_PREFIX))
          .map((l) => l.slice(IPSET_LINE_PREFIX.length));
        await ns.run(['ipset', 'restore', '-exist'], `${sets.join('\n')}\n`);
        try {
          await ns.run(['iptables-restore', '--test'], text);
        } finally {
          await ns.run(['ipset', 'destroy']);
        }
      }),
      runs(12),
    );
  }, 120_000);
});
