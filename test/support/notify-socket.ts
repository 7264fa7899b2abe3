import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eachLine, waitableList } from './lines.js';

const SCRIPT = fileURLToPath(new URL('../systemd/notify-socket.py', import.meta.url));

export interface Datagram {
  fields: string[];
  /** The sender's pid from SCM_CREDENTIALS. */
  pid: number | null;
}

/**
 * A real AF_UNIX datagram socket standing in for systemd's notify socket (Node has no
 * unix datagram sockets, so a small python3 script binds it). Barrier datagrams
 * (BARRIER=1, sent by systemd-notify after each message) are kept apart in `barriers`.
 */
export interface NotifySocket {
  path: string;
  messages: Datagram[];
  barriers: Datagram[];
  /** Resolves with the first message (index >= from) that matches; rejects after ms. */
  waitFor(match: (d: Datagram) => boolean, ms?: number, from?: number): Promise<Datagram>;
  close(): Promise<void>;
}

export async function notifySocket(dir: string): Promise<NotifySocket> {
  const socketPath = path.join(dir, 'notify.sock');
  const child = spawn('python3', [SCRIPT, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const list = waitableList<Datagram>((got) => `got: ${JSON.stringify(got.map((m) => m.fields))}`);
  const messages = list.items;
  const barriers: Datagram[] = [];
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const listening = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`notify-socket.py exited ${code}: ${err}`)));
    eachLine(child.stdout!, (line) => {
      if (line === 'listening') return resolve();
      const d = JSON.parse(line) as Datagram;
      (d.fields.length === 1 && d.fields[0] === 'BARRIER=1' ? barriers : messages).push(d);
      list.changed();
    });
  });
  await listening;
  return {
    path: socketPath,
    messages,
    barriers,
    waitFor: list.waitFor,
    close() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** A datagram's fields as one string, for readable assertions. */
export const text = (d: Datagram) => d.fields.join('\n');
