/**
 * The soak loop (issue 5): many checks against loopback backends that flap at random
 * between healthy, refusing, silent, resetting, closing and answering wrong, with
 * heap, RSS and open handles sampled along the way. Imports nothing from src/: the
 * caller hands in runCheck (the built one from bench/soak.ts, the source one from the
 * suite's short version), so this file compiles with the bench and the tests alike.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface SoakResult {
  up: boolean;
  detail: string;
  latencyMs: number;
  bytesRead?: number;
}
type Target = { service: string; backend: string; address: string; port: number };

export interface SoakOptions {
  runCheck: (
    check: { type: string } & Record<string, unknown>,
    target: Target,
    timeoutMs: number,
  ) => Promise<SoakResult>;
  /** Checks to run in all. */
  total: number;
  /** Checks in flight at once. */
  concurrency: number;
  timeoutMs: number;
  /** Backends per kind (smtp, http, tls when `tls` is given). */
  backendsPerKind: number;
  /** Every flapMs, each backend changes its behaviour with this probability. */
  flapMs: number;
  flapProbability: number;
  tls?: { key: string | Buffer; cert: string | Buffer };
  /** How many memory samples along the way (start and end included). */
  samples?: number;
  onSample?: (sample: Sample) => void;
  random?: () => number;
}

export interface Sample {
  checks: number;
  heapUsedMiB: number;
  rssMiB: number;
  handles: Record<string, number>;
}

export interface SoakFigures {
  checks: number;
  up: number;
  down: number;
  seconds: number;
  checksPerSecond: number;
  /** Longest check, and how many exceeded the timeout by more than 250 ms. */
  maxLatencyMs: number;
  overTimeoutPlus250: number;
  maxBytesRead: number;
  samples: Sample[];
  /** Down details, grouped by their first words: what the flapping produced. */
  reasons: Record<string, number>;
}

type Mode = 'ok' | 'refused' | 'silent' | 'reset' | 'close' | 'wrong';
/** Weights of the behaviours a flapping backend picks from. */
const MODES: [Mode, number][] = [
  ['ok', 60],
  ['refused', 10],
  ['silent', 5],
  ['reset', 10],
  ['close', 10],
  ['wrong', 5],
];

type Kind = 'smtp' | 'http' | 'tls';

interface Backend {
  kind: Kind;
  port: number;
  mode: Mode;
  server?: net.Server;
  sockets: Set<net.Socket>;
}

function pickMode(random: () => number): Mode {
  let r = random() * MODES.reduce((sum, [, w]) => sum + w, 0);
  for (const [mode, weight] of MODES) {
    r -= weight;
    if (r < 0) return mode;
  }
  return 'ok';
}

/** What a backend of `kind` does with a connection in `mode`. */
function behave(b: Backend, socket: net.Socket): void {
  socket.on('error', () => undefined);
  b.sockets.add(socket);
  socket.on('close', () => b.sockets.delete(socket));
  switch (b.mode) {
    case 'silent':
      return;
    case 'reset':
      return void socket.resetAndDestroy();
    case 'close':
      return void socket.end();
    default:
  }
  const wrong = b.mode === 'wrong';
  if (b.kind === 'smtp') {
    socket.write(wrong ? '554 5.3.2 go away\r\n' : '220 soak ESMTP\r\n');
    socket.on('data', (d: Buffer) => {
      if (d.includes('QUIT')) socket.end('221 bye\r\n');
    });
  } else {
    socket.once('data', () =>
      socket.end(
        wrong ? 'HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
      ),
    );
  }
}

async function listen(b: Backend, tlsOptions: SoakOptions['tls']): Promise<void> {
  const server =
    b.kind === 'tls' && tlsOptions
      ? tls.createServer(tlsOptions, (s) => behave(b, s))
      : net.createServer((s) => behave(b, s));
  server.on('tlsClientError', () => undefined);
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(b.port, '127.0.0.1', resolve));
  b.port = (server.address() as net.AddressInfo).port;
  b.server = server;
}

async function unlisten(b: Backend): Promise<void> {
  const server = b.server;
  b.server = undefined;
  if (!server) return;
  for (const s of b.sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export function handleCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

/** Socket-ish handle types: these must come back to where they started. */
export const SOCKET_HANDLES = [
  'TCPSocketWrap',
  'TCPWRAP',
  'TLSWrap',
  'TCPConnectWrap',
  'TCPServerWrap',
  'ProcessWrap',
  'PipeWrap',
];

/** Waits (polling, with a deadline) until no socket-ish handle type counts more than in `baseline`. */
export async function settled(baseline: Record<string, number>, deadlineMs: number): Promise<Record<string, number>> {
  const deadline = performance.now() + deadlineMs;
  for (;;) {
    const now = handleCounts();
    const grown = SOCKET_HANDLES.some((t) => (now[t] ?? 0) > (baseline[t] ?? 0));
    if (!grown || performance.now() > deadline) return now;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function sample(checks: number): Sample {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { checks, heapUsedMiB: round(m.heapUsed / 1048576), rssMiB: round(m.rss / 1048576), handles: handleCounts() };
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

export async function soak(options: SoakOptions): Promise<SoakFigures> {
  const random = options.random ?? Math.random;
  const kinds: Kind[] = options.tls ? ['smtp', 'http', 'tls'] : ['smtp', 'http'];
  const backends: Backend[] = kinds.flatMap((kind) =>
    Array.from({ length: options.backendsPerKind }, () => ({
      kind,
      port: 0,
      mode: 'ok' as Mode,
      sockets: new Set<net.Socket>(),
    })),
  );
  for (const b of backends) await listen(b, options.tls);

  let flapping = Promise.resolve();
  const flapTimer = setInterval(() => {
    flapping = flapping.then(async () => {
      for (const b of backends) {
        if (random() >= options.flapProbability) continue;
        const next = pickMode(random);
        if (next === 'refused' && b.server) await unlisten(b);
        // Back on the same port; if someone took it meanwhile, a new one.
        if (next !== 'refused' && !b.server)
          await listen(b, options.tls).catch(() => {
            b.port = 0;
            return listen(b, options.tls);
          });
        b.mode = next;
      }
    });
  }, options.flapMs);

  const checks: Record<Kind, { type: string } & Record<string, unknown>> = {
    smtp: { type: 'smtp' },
    http: { type: 'http' },
    tls: { type: 'tls', verify: false },
  };
  const samples: Sample[] = [];
  const sampleEvery = Math.max(1, Math.floor(options.total / Math.max(1, (options.samples ?? 5) - 1)));
  const take = (n: number) => {
    const s = sample(n);
    samples.push(s);
    options.onSample?.(s);
  };
  take(0);
  const reasons: Record<string, number> = {};
  let started = 0;
  let done = 0;
  let up = 0;
  let maxLatencyMs = 0;
  let over = 0;
  let maxBytesRead = 0;
  const began = performance.now();
  const worker = async () => {
    while (started < options.total) {
      started++;
      const b = backends[Math.floor(random() * backends.length)]!;
      const result = await options.runCheck(
        checks[b.kind],
        { service: 'soak', backend: `${b.kind}-${b.port}`, address: '127.0.0.1', port: b.port },
        options.timeoutMs,
      );
      done++;
      if (result.up) up++;
      else {
        const key = result.detail
          .replace(/"[^"]*"/g, '"..."')
          .replace(/\d+/g, 'N')
          .slice(0, 60);
        reasons[key] = (reasons[key] ?? 0) + 1;
      }
      maxLatencyMs = Math.max(maxLatencyMs, result.latencyMs);
      if (result.latencyMs > options.timeoutMs + 250) over++;
      maxBytesRead = Math.max(maxBytesRead, result.bytesRead ?? 0);
      if (done % sampleEvery === 0 && done < options.total) take(done);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - began) / 1000;
  clearInterval(flapTimer);
  await flapping;
  for (const b of backends) await unlisten(b);
  // QUITs are said in the background (bounded by a grace period): let them finish.
  await settled(samples[0]!.handles, 5000);
  take(done);
  return {
    checks: done,
    up,
    down: done - up,
    seconds: round(seconds),
    checksPerSecond: Math.round(done / seconds),
    maxLatencyMs,
    overTimeoutPlus250: over,
    maxBytesRead,
    samples,
    reasons,
  };
}
