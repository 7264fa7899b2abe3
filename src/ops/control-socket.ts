/**
 * The control socket `nf-healthd set` talks to: a unix stream socket beside the state
 * file (or `controlSocket`), mode 0660 with the daemon's group, so root and members of
 * the service group may use it and nobody else; nothing listens on the network for it.
 * Line-based JSON (src/ops/control.ts): lines are bounded, clients are bounded, a
 * client that stays silent or half-open is dropped after a timeout.
 */
import { chmod, mkdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { controlSocketPath } from '../config/operations.js';
import type { Logger } from '../log.js';
import type { Daemon, DaemonPlugin } from '../observer.js';
import { type ControlAnswer, handleRequest, MAX_REQUEST_BYTES } from './control.js';

/** Clients at once: an operator or a deploy script, not a crowd. */
export const MAX_CLIENTS = 16;
/** A client that sends no complete line for this long is dropped. */
export const CLIENT_IDLE_MS = 10_000;

/** Is something answering on this socket path (another daemon)? */
function answers(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(file);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

function serveClient(socket: net.Socket, daemon: Daemon, log: Logger): void {
  let buffer = '';
  let queue: Promise<void> = Promise.resolve();
  const reply = (answer: ControlAnswer) => {
    if (!socket.destroyed) socket.write(`${JSON.stringify(answer)}\n`);
  };
  const refuse = (message: string) => {
    reply({ ok: false, error: 'usage', message });
    socket.end();
    socket.destroySoon();
  };
  socket.setEncoding('utf8');
  socket.setTimeout(CLIENT_IDLE_MS, () => {
    reply({ ok: false, error: 'usage', message: `no complete request within ${CLIENT_IDLE_MS / 1000}s` });
    socket.destroy();
  });
  socket.on('error', () => undefined); // a client that went away: nothing to tell
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
      if (line.trim() === '') continue;
      queue = queue.then(async () => {
        let request: unknown;
        try {
          request = JSON.parse(line);
        } catch {
          return reply({ ok: false, error: 'usage', message: 'bad request: not a JSON object' });
        }
        try {
          reply(await handleRequest(daemon, request));
        } catch (err) {
          log.error({ event: 'control_failed', err }, 'a control request failed');
          reply({ ok: false, error: 'failed', message: 'the request failed inside the daemon (see its log)' });
        }
      });
    }
    if (Buffer.byteLength(buffer) > MAX_REQUEST_BYTES) {
      buffer = '';
      refuse(`bad request: a line is longer than ${MAX_REQUEST_BYTES} bytes`);
    }
  });
}

export const controlSocketPlugin: DaemonPlugin = ({ daemon, log }) => {
  let server: net.Server | undefined;
  let bound: string | undefined;
  let stopped = false;

  const close = async () => {
    const s = server;
    const file = bound;
    server = undefined;
    bound = undefined;
    if (!s || !file) return;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    await unlink(file).catch(() => undefined);
  };

  const open = async (file: string) => {
    await mkdir(path.dirname(file), { recursive: true, mode: 0o750 });
    if (await answers(file)) {
      log.error(
        { event: 'control_failed', socket: file },
        `another nf-healthd answers on ${file}: this one has no control socket (give each config its own stateFile or controlSocket)`,
      );
      return;
    }
    await unlink(file).catch(() => undefined); // a stale socket of a daemon that died
    const s = net.createServer((socket) => serveClient(socket, daemon, log));
    s.maxConnections = MAX_CLIENTS;
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(file, () => {
        s.off('error', reject);
        resolve();
      });
    });
    // The daemon's group may use it; the umask (0077 under systemd) would leave owner only.
    await chmod(file, 0o660);
    s.on('error', (err) => log.error({ event: 'control_failed', err }, 'control socket error'));
    server = s;
    bound = file;
    log.info({ event: 'control_listening', socket: file }, `nf-healthd set talks to ${file}`);
  };

  let applying: Promise<void> = Promise.resolve();
  const apply = () => {
    applying = applying.then(async () => {
      const want = stopped ? undefined : controlSocketPath(daemon.config());
      if (want === bound) return;
      await close();
      if (!want) return;
      try {
        await open(want);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        log.error(
          { event: 'control_failed', socket: want, code: e.code },
          `cannot listen on ${want} for nf-healthd set: ${e.code ?? e.message}`,
        );
      }
    });
    return applying;
  };
  return {
    onReady() {
      // Not before: a `set` must find every backend in place.
      apply();
    },
    onReloaded(ok) {
      if (ok) apply();
    },
    onStopping() {
      stopped = true;
      apply();
    },
  };
};
