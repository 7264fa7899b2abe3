import { connect, lineConnection, type LineConnection, type ReadBounds, DEFAULT_BOUNDS } from './connection.js';
import { CheckFailed, type ProbeTarget, type ProbeVerdict } from './types.js';

/**
 * The one connect/send/expect engine behind every line-based check (HAProxy's
 * tcp-check idea): SMTP and the other presets are lists of these steps.
 */
export type Step =
  /** Send bytes as they are (include the CRLF). */
  | { kind: 'send'; data: string; phase: string }
  /** Read one RFC 5321-style reply (`ddd-` continuation lines up to `ddd ` or `ddd`) whose code starts with `code`. */
  | { kind: 'reply'; code: string; phase: string }
  /** Read one line; it must start with `prefix` or match `pattern`. */
  | { kind: 'line'; match: string | RegExp; phase: string };

export interface Conversation {
  steps: Step[];
  /** Sent after the verdict is known (QUIT): failures past this point do not change it. */
  farewell?: string;
  bounds?: Partial<ReadBounds> & { maxReplyBytes?: number };
}

const MAX_DETAIL = 200;

export function shorten(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > MAX_DETAIL ? `${printable.slice(0, MAX_DETAIL)}...` : printable;
}

interface Reply {
  code: string;
  lines: string[];
}

const REPLY_LINE = /^(\d{3})(?:([ -])(.*))?$/s;

/** Reads one multi-line reply, bounded in bytes as a whole. */
export async function readReply(conn: LineConnection, maxReplyBytes: number): Promise<Reply> {
  const lines: string[] = [];
  let size = 0;
  let code: string | undefined;
  for (;;) {
    const line = await conn.readLine();
    size += line.length + 2;
    if (size > maxReplyBytes) throw new CheckFailed(`${conn.phase}: reply longer than ${maxReplyBytes} bytes`);
    const m = REPLY_LINE.exec(line);
    if (!m) throw new CheckFailed(`${conn.phase}: malformed reply "${shorten(line)}"`);
    if (code !== undefined && m[1] !== code) throw new CheckFailed(`${conn.phase}: reply code changed from ${code} to ${m[1]} inside one reply`);
    code = m[1]!;
    lines.push(line);
    if (m[2] !== '-') return { code, lines };
  }
}

/** Runs the steps; up when every step passed, with the first thing the backend said as detail. */
export async function converse(target: ProbeTarget, conversation: Conversation, signal: AbortSignal): Promise<ProbeVerdict> {
  const bounds = { ...DEFAULT_BOUNDS, ...conversation.bounds };
  const maxReplyBytes = conversation.bounds?.maxReplyBytes ?? 4096;
  const socket = await connect(target, signal);
  const conn = lineConnection(socket, signal, bounds);
  let said = 'connected';
  try {
    for (const step of conversation.steps) {
      conn.phase = step.phase;
      if (step.kind === 'send') {
        await conn.write(step.data);
      } else if (step.kind === 'reply') {
        const reply = await readReply(conn, maxReplyBytes);
        if (said === 'connected') said = reply.lines[0]!;
        if (!reply.code.startsWith(step.code)) {
          throw new CheckFailed(`${step.phase}: expected ${step.code.padEnd(3, 'x')}, got "${shorten(reply.lines.join(' | '))}"`);
        }
      } else {
        const line = await conn.readLine();
        if (said === 'connected') said = line;
        const ok = typeof step.match === 'string' ? line.startsWith(step.match) : step.match.test(line);
        if (!ok) throw new CheckFailed(`${step.phase}: expected ${String(step.match)}, got "${shorten(line)}"`);
      }
    }
  } catch (err) {
    conn.reset();
    throw err;
  }
  if (conversation.farewell !== undefined) {
    conn.phase = 'closing';
    // The verdict is known; a backend that resets on QUIT is still up.
    await conn.write(conversation.farewell).then(() => conn.closeGracefully(), () => undefined);
  }
  conn.reset();
  return { up: true, detail: shorten(said) };
}
