import { afterEach, describe, expect, it } from 'vitest';
import type { BackendStatus } from '../src/observer.js';
import { createMetrics } from '../src/ops/metrics.js';
import { shortestInterval, writePeriod } from '../src/ops/state-plugin.js';
import { MAX_HEAD_BYTES, readHead } from '../src/probes/http-head.js';
import { checkSchema, leanConversation } from '../src/probes/registry.js';
import { runCheck } from '../src/probes/run.js';
import { createTimerHeap, type TimerEntry } from '../src/timer-heap.js';
import { waitUntil } from './support/daemon.js';
import { tcpServer } from './support/servers.js';

/**
 * The parts of the lean check path (docs/testing.md#benchmarks measures its cost): the
 * timer heap under the scheduler and the check deadlines, the limiter, the HTTP response
 * head reader, the engine's handling of the daemon's stop, and the state file's heartbeat.
 * Real sockets on loopback; the probes' verdicts are covered by probes, probe-types and
 * hostile tests, which now run on this engine.
 */

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

const target = (port: number) => ({ service: 's', backend: 'b', address: '127.0.0.1', port });

describe('timer heap', () => {
  const entry = (due: number, fired: number[]): TimerEntry => ({
    due,
    slot: -1,
    fire() {
      fired.push(this.due);
    },
  });

  it('fires entries in order of due, on one timer, and never a removed one', async () => {
    const heap = createTimerHeap();
    const fired: number[] = [];
    const now = performance.now();
    const entries = [30, 5, 20, 10, 25, 15].map((ms) => entry(now + ms, fired));
    for (const e of entries) heap.add(e);
    heap.remove(entries[2]!); // due +20
    expect(heap.size).toBe(5);
    await new Promise<void>((resolve) => {
      const poll = () => (heap.size === 0 ? resolve() : setTimeout(poll, 5));
      poll();
    });
    expect(fired.map((d) => Math.round(d - now))).toEqual([5, 10, 15, 25, 30]);
  });

  it('keeps the heap order through many adds, removals and re-adds', async () => {
    const fired: number[] = [];
    // Every entry is already due on this clock: one wake-up takes them all, earliest first.
    const heap = createTimerHeap({ now: () => 10_000, batchMs: 0 });
    const entries = Array.from({ length: 500 }, (_, i) => entry((i * 7919) % 1000, fired));
    for (const e of entries) heap.add(e);
    for (const e of entries.filter((_, i) => i % 3 === 0)) heap.remove(e);
    entries[1]!.due = 2000; // re-added: moves to its new due
    heap.add(entries[1]!);
    expect(heap.size).toBe(500 - 167);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(heap.size).toBe(0);
    expect(fired).toHaveLength(500 - 167);
    expect(fired).toEqual([...fired].sort((a, b) => a - b));
    expect(fired.at(-1)).toBe(2000);
  });
});

describe('HTTP response head', () => {
  it('reads the status, the Location, and skips interim 1xx heads', () => {
    expect(readHead('HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody')).toEqual({
      end: 30,
      status: 200,
      statusText: '200 OK',
    });
    expect(readHead('HTTP/1.0 301 Moved\r\nlocation: /there\r\n\r\n')).toMatchObject({
      status: 301,
      location: '/there',
    });
    expect(readHead('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204\r\n\r\n')).toMatchObject({
      status: 204,
      statusText: '204',
    });
  });

  it('waits for the blank line, and says what is malformed in llhttp words', () => {
    expect(readHead('HTTP/1.1 200 OK\r\nServer: x\r\n')).toBeUndefined();
    expect(readHead('HT')).toBeUndefined();
    expect(readHead('HTTX')).toBe('malformed HTTP response (HPE_INVALID_CONSTANT)');
    expect(readHead('SSH-2.0-OpenSSH\r\n')).toBe('malformed HTTP response (HPE_INVALID_CONSTANT)');
    expect(readHead('HTTP/1.1 two hundred\r\n\r\n')).toBe('malformed HTTP response (HPE_INVALID_STATUS)');
    expect(readHead('HTTP/2.0 200 OK\r\n\r\n')).toBe('malformed HTTP response (HPE_INVALID_VERSION)');
    expect(readHead('HTTP/1.1 200 OK\r\nno colon here\r\n\r\n')).toBe(
      'malformed HTTP response (HPE_INVALID_HEADER_TOKEN)',
    );
    expect(readHead(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(MAX_HEAD_BYTES)}`)).toBe(
      'malformed HTTP response (HPE_HEADER_OVERFLOW)',
    );
  });

  it("leaves a check that searches the body, or has a path to escape, to Node's client", () => {
    const http = (extra: Record<string, unknown>) => checkSchema.parse({ type: 'http', ...extra });
    expect(leanConversation(http({}))).toBeDefined();
    expect(leanConversation(http({ method: 'HEAD', expectBody: 'ok' }))).toBeDefined();
    expect(leanConversation(http({ expectBody: 'ok' }))).toBeUndefined();
    expect(leanConversation(http({ path: '/a b' }))).toBeUndefined();
    expect(leanConversation(checkSchema.parse({ type: 'smtp', starttls: true }))).toBeUndefined();
    expect(leanConversation(checkSchema.parse({ type: 'smtp', ehlo: 'x.example' }))).toBeDefined();
  });

  it('sends a request whose path needs escaping through Node, which refuses it in words', async () => {
    let received = '';
    const server = await tcpServer((socket) => socket.on('data', (d) => (received += d)));
    closers.push(server.close);
    const result = await runCheck(checkSchema.parse({ type: 'http', path: '/a\r\nX: y' }), target(server.port), 1000);
    expect(result.up).toBe(false);
    expect(result.detail).toMatch(/ERR_UNESCAPED_CHARACTERS/);
    expect(received).not.toContain('X: y');
  });
});

describe('lean engine', () => {
  it('ends a check in flight when the daemon stops, naming what it was doing', async () => {
    let accepted = 0;
    const server = await tcpServer(() => accepted++); // accepts, never greets
    closers.push(server.close);
    const stop = new AbortController();
    const check = checkSchema.parse({ type: 'smtp' });
    const pending = Array.from({ length: 20 }, () => runCheck(check, target(server.port), 10_000, stop.signal));
    // All 20 accepted: each client saw its handshake complete in the same poll or an earlier
    // one, so every check is waiting for the greeting (a fixed pause could end before that).
    await waitUntil(
      () => accepted,
      (n) => n === 20,
    );
    await new Promise((resolve) => setImmediate(resolve));
    stop.abort();
    for (const result of await Promise.all(pending))
      expect(result).toMatchObject({ up: false, detail: 'check aborted: shutting down (greeting)' });
    expect(await runCheck(check, target(server.port), 1000, stop.signal)).toMatchObject({
      up: false,
      detail: 'check aborted: shutting down (connect)',
    });
  });

  it('lets the backend close first after QUIT, and counts the bytes it read', async () => {
    let closedByPeerFirst = false;
    const server = await tcpServer((socket) => {
      socket.write('220 mx ready\r\n');
      socket.on('data', (d) => {
        if (String(d).startsWith('QUIT')) socket.end('221 bye\r\n');
      });
      socket.on('end', () => (closedByPeerFirst = socket.writableEnded));
    });
    closers.push(server.close);
    const result = await runCheck(checkSchema.parse({ type: 'smtp' }), target(server.port), 2000);
    expect(result).toMatchObject({ up: true, detail: '220 mx ready', bytesRead: 14 });
    await new Promise<void>((resolve) => {
      const poll = () => (closedByPeerFirst ? resolve() : setTimeout(poll, 10));
      poll();
    });
    expect(closedByPeerFirst).toBe(true);
  });

  it('resets a backend that never closes after QUIT, within the grace', async () => {
    let reset = false;
    const server = await tcpServer((socket) => {
      socket.write('220 ready\r\n');
      socket.on('error', (err: NodeJS.ErrnoException) => (reset = err.code === 'ECONNRESET'));
    });
    closers.push(server.close);
    expect(await runCheck(checkSchema.parse({ type: 'smtp' }), target(server.port), 1000)).toMatchObject({
      up: true,
    });
    const deadline = Date.now() + 10_000;
    while (!reset && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(reset).toBe(true);
  });
});

describe('state file heartbeat', () => {
  const daemonOf = (count: number, interval = 1000) => ({
    backends: () => Array.from({ length: count }, () => ({ spec: { interval } }) as BackendStatus),
    config: () => ({ defaults: { interval } }) as ReturnType<Parameters<typeof writePeriod>[0]['config']>,
  });

  it('is the shortest interval for a small farm, 1 ms per backend for a big one, at most 10 s', () => {
    expect(writePeriod(daemonOf(200))).toBe(1000);
    expect(writePeriod(daemonOf(5000))).toBe(5000);
    expect(writePeriod(daemonOf(50_000))).toBe(10_000);
    expect(writePeriod(daemonOf(50_000, 30_000))).toBe(30_000);
    // Per-interval work (connection counts) keeps the interval.
    expect(shortestInterval(daemonOf(50_000))).toBe(1000);
  });
});

describe('check metrics as plain counters', () => {
  it('are series in prom-client form at scrape time, and a reload drops the series of a removed backend (drained ones too)', async () => {
    const backend = (name: string) =>
      ({
        spec: { id: `svc/${name}`, service: 'svc', name, checks: [{ type: 'smtp' }] },
        health: { state: 'up' },
      }) as unknown as BackendStatus;
    let backends = [backend('a'), backend('b')];
    const daemon = {
      backends: () => backends,
      checksInFlight: () => ({ active: 0, pending: 0 }),
      scheduler: () => ({ lastLagMs: () => 0 }),
      lastProgressAt: () => 0,
    } as unknown as Parameters<typeof createMetrics>[0];
    const { registry, observer, countDrained } = createMetrics(daemon, { processMetrics: false });
    countDrained(backends[1]!);
    observer.onCheck!(backends[0]!, { up: true, detail: '', latencyMs: 3 });
    observer.onCheck!(backends[0]!, { up: true, detail: '', latencyMs: 30 });
    observer.onCheck!(backends[1]!, { up: false, detail: '', latencyMs: 700 });
    const text = await registry.metrics();
    expect(text).toContain('nfh_checks_total{service="svc",backend="a",type="smtp",outcome="up"} 2');
    expect(text).toContain('nfh_checks_total{service="svc",backend="b",type="smtp",outcome="down"} 1');
    expect(text).toContain(
      'nfh_check_duration_seconds_bucket{le="0.005",service="svc",backend="a",type="smtp",outcome="up"} 1',
    );
    expect(text).toContain(
      'nfh_check_duration_seconds_bucket{le="0.05",service="svc",backend="a",type="smtp",outcome="up"} 2',
    );
    expect(text).toContain('nfh_check_duration_seconds_sum{service="svc",backend="a",type="smtp",outcome="up"} 0.033');
    expect(text).toContain(
      'nfh_check_duration_seconds_bucket{le="+Inf",service="svc",backend="b",type="smtp",outcome="down"} 1',
    );
    expect(text).not.toContain('backend="a",type="smtp",outcome="down"');
    expect(text).toContain('nfh_drained_total{service="svc",backend="b"} 1');
    backends = [backends[0]!];
    observer.onReloaded!(true, []);
    const after = await registry.metrics();
    expect(after).toContain('backend="a"');
    expect(after).not.toContain('backend="b"');
  });
});
