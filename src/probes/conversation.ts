import type { z } from 'zod';
import { connect, DEFAULT_BOUNDS, type LineConnection, lineConnection, type ReadBounds } from './connection.js';
import { type ResponseHead, readHead, statusMatches } from './http-head.js';
import { oncePer } from './memo.js';
import { startTls, type TlsOptions } from './tls-options.js';
import { CheckFailed, type ProbeDefinition, type ProbeTarget, type ProbeVerdict } from './types.js';

/**
 * The one connect/send/expect engine behind every line-based check (HAProxy's
 * tcp-check idea): SMTP and the other presets are lists of these steps.
 */
export type Step =
  /** Send bytes as they are (include the CRLF). */
  | { kind: 'send'; data: string; phase: string }
  /**
   * Read one multi-line reply whose code starts with `code`. `smtp` style (RFC 5321):
   * every line is `ddd-` up to `ddd ` or `ddd`; `ftp` style (RFC 959): after `ddd-`,
   * free text lines until one starting `ddd `. `require`: some line must match.
   */
  | {
      kind: 'reply';
      code: string;
      phase: string;
      style?: 'smtp' | 'ftp';
      require?: { pattern: RegExp; missing: string };
    }
  /** Read one line; it must start with `prefix` or match `pattern`. */
  | { kind: 'line'; match: string | RegExp; phase: string }
  /** Read on (within the byte bound) until what was received contains the string or matches the pattern. */
  | { kind: 'search'; match: string | RegExp; phase: string }
  /** TLS handshake on the connection as it is: at the start for implicit TLS, after STARTTLS otherwise. */
  | { kind: 'tls'; options: TlsOptions; phase: string }
  /**
   * Send an HTTP/1.1 request (built for the target) and read the response head; its status
   * must be one of `expectStatus` (the `http` check when the status alone is the verdict).
   */
  | {
      kind: 'http';
      request: (target: ProbeTarget) => string;
      expectStatus: readonly (number | string)[];
      phase: string;
    };

export interface Conversation {
  steps: Step[];
  /**
   * Sent after the verdict is known (QUIT): failures past this point do not change it.
   * Either way (`''`: nothing to say) the backend is then left to close first.
   */
  farewell?: string;
  bounds?: Partial<ReadBounds> & { maxReplyBytes?: number };
}

const MAX_DETAIL = 200;

export function shorten(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?');
  return printable.length > MAX_DETAIL ? `${printable.slice(0, MAX_DETAIL)}...` : printable;
}

export interface Reply {
  code: string;
  lines: string[];
}

export const REPLY_LINE = /^(\d{3})(?:([ -])(.*))?$/s;

/** Reads one multi-line reply, bounded in bytes as a whole. */
export async function readReply(
  conn: LineConnection,
  maxReplyBytes: number,
  style: 'smtp' | 'ftp' = 'smtp',
): Promise<Reply> {
  const lines: string[] = [];
  let size = 0;
  let code: string | undefined;
  for (;;) {
    const line = await conn.readLine();
    size += line.length + 2;
    if (size > maxReplyBytes) throw new CheckFailed(`${conn.phase}: reply longer than ${maxReplyBytes} bytes`);
    if (style === 'ftp' && code !== undefined) {
      lines.push(line);
      if (line === code || line.startsWith(`${code} `)) return { code, lines };
      continue;
    }
    const m = REPLY_LINE.exec(line);
    if (!m) throw new CheckFailed(`${conn.phase}: malformed reply "${shorten(line)}"`);
    if (code !== undefined && m[1] !== code)
      throw new CheckFailed(`${conn.phase}: reply code changed from ${code} to ${m[1]} inside one reply`);
    code = m[1]!;
    lines.push(line);
    if (m[2] !== '-') return { code, lines };
  }
}

/**
 * A reply as one line for a detail, the code once and the text of every line:
 * `220-mx.example ESMTP` + `220 ready` gives `220 mx.example ESMTP | ready`.
 */
export function replyText(reply: Reply): string {
  const texts = reply.lines
    .map((line) =>
      line.startsWith(reply.code) && (line.length === 3 || line[3] === ' ' || line[3] === '-') ? line.slice(4) : line,
    )
    .map((text) => text.trim())
    .filter((text) => text !== '');
  return texts.length > 0 ? `${reply.code} ${texts.join(' | ')}` : reply.code;
}

/** Why a whole reply fails its step (a wrong code, a required line missing), or undefined. */
export function checkReply(step: Extract<Step, { kind: 'reply' }>, reply: Reply): string | undefined {
  if (!reply.code.startsWith(step.code))
    return `${step.phase}: expected ${step.code.padEnd(3, 'x')}, got "${shorten(reply.lines.join(' | '))}"`;
  if (step.require && !reply.lines.some((line) => step.require!.pattern.test(line)))
    return `${step.phase}: ${step.require.missing} (reply "${shorten(reply.lines.join(' | '))}")`;
  return undefined;
}

/** An HTTP response head against the statuses that mean up, in the words of the http check. */
export function headVerdict(head: ResponseHead | string, expectStatus: readonly (number | string)[]): ProbeVerdict {
  if (typeof head === 'string') return { up: false, detail: head };
  const where =
    head.status >= 300 && head.status < 400 && head.location ? ` (Location: ${shorten(head.location)})` : '';
  if (!statusMatches(head.status, expectStatus))
    return { up: false, detail: `status ${head.statusText}${where}, expected ${expectStatus.join(', ')}` };
  return { up: true, detail: `${head.statusText}${where}` };
}

/** Runs the steps; up when every step passed, with the first thing the backend said as detail. */
export async function converse(
  target: ProbeTarget,
  conversation: Conversation,
  signal: AbortSignal,
): Promise<ProbeVerdict> {
  const bounds = { ...DEFAULT_BOUNDS, ...conversation.bounds };
  const maxReplyBytes = conversation.bounds?.maxReplyBytes ?? 4096;
  const socket = await connect(target, signal);
  let conn = lineConnection(socket, signal, bounds);
  let said = 'connected';
  let tlsNote: string | undefined;
  try {
    for (const step of conversation.steps) {
      conn.phase = step.phase;
      if (step.kind === 'send') {
        await conn.write(step.data);
      } else if (step.kind === 'reply') {
        const reply = await readReply(conn, maxReplyBytes, step.style);
        if (said === 'connected') said = replyText(reply);
        const wrong = checkReply(step, reply);
        if (wrong !== undefined) throw new CheckFailed(wrong);
      } else if (step.kind === 'line') {
        const line = await conn.readLine();
        if (said === 'connected') said = line;
        const ok = typeof step.match === 'string' ? line.startsWith(step.match) : step.match.test(line);
        if (!ok) throw new CheckFailed(`${step.phase}: expected ${String(step.match)}, got "${shorten(line)}"`);
      } else if (step.kind === 'http') {
        await conn.write(step.request(target));
        let head: ResponseHead | string | undefined;
        await conn.readUntil((buffered) => {
          head = readHead(buffered);
          return head === undefined ? -1 : typeof head === 'string' ? 0 : head.end;
        });
        const verdict = headVerdict(head!, step.expectStatus);
        if (!verdict.up) throw new CheckFailed(verdict.detail);
        said = verdict.detail;
      } else if (step.kind === 'search') {
        const found = await searchFor(conn, step.match);
        if (said === 'connected') said = found.trim();
      } else {
        if (tlsNote !== undefined) throw new CheckFailed(`${step.phase}: the connection is already TLS`);
        const tcp = conn.release();
        const upgraded = await startTls(tcp, target, step.options, signal);
        tlsNote = upgraded.note;
        const left = Math.max(bounds.maxTotalBytes - conn.bytesRead(), 1);
        conn = lineConnection(upgraded.socket, signal, { ...bounds, maxTotalBytes: left }, tcp);
      }
    }
  } catch (err) {
    conn.reset();
    throw err;
  }
  if (conversation.farewell !== undefined) sayFarewell(conn, conversation.farewell);
  else conn.reset();
  const detail = shorten(said);
  return { up: true, detail: tlsNote ? `${detail}; ${tlsNote}` : detail };
}

/**
 * exec on a /g or /y pattern would carry lastIndex between checks: a non-global copy of
 * those (made once); any other pattern is stateless and used as it is.
 */
export const statelessPattern = oncePer(
  (match: RegExp): RegExp =>
    match.global || match.sticky ? new RegExp(match.source, match.flags.replace(/[gy]/g, '')) : match,
);

/** Reads until the received text holds `match`; returns the matched text. */
async function searchFor(conn: LineConnection, match: string | RegExp): Promise<string> {
  const pattern = typeof match === 'string' ? undefined : statelessPattern(match);
  let found = '';
  await conn.readUntil((buffered) => {
    if (pattern === undefined) {
      const at = buffered.indexOf(match as string);
      if (at < 0) return -1;
      found = match as string;
      return at + found.length;
    }
    const m = pattern.exec(buffered);
    if (!m) return -1;
    found = m[0];
    return m.index + m[0].length;
  });
  return found;
}

/** How long a backend may take to close after QUIT before we reset. */
export const FAREWELL_GRACE_MS = 2000;

/**
 * The verdict is known: QUIT and half-close in the background, so the backend logs
 * a clean session and closes first (its side keeps the TIME_WAIT, not ours). A
 * backend that resets on QUIT is still up; one that never closes is reset.
 */
function sayFarewell(conn: LineConnection, farewell: string): void {
  conn.phase = 'closing';
  const grace = setTimeout(() => conn.reset(), FAREWELL_GRACE_MS);
  grace.unref();
  (farewell === '' ? Promise.resolve() : conn.write(farewell))
    .then(() => conn.closeGracefully())
    .catch(() => undefined)
    .finally(() => {
      clearTimeout(grace);
      conn.reset();
    });
}

/**
 * A check that is a conversation: its steps built once per check config (its patterns
 * compiled once), run by converse() here or, without TLS, by the lean engine (engine.ts)
 * that runCheck picks through `script`.
 */
export function scriptedProbe<S extends z.ZodObject>(def: {
  type: string;
  schema: S;
  script: (options: z.infer<S>) => Conversation;
}): ProbeDefinition<S> & { script: (options: z.infer<S>) => Conversation } {
  const script = oncePer(def.script);
  return {
    type: def.type,
    schema: def.schema,
    script,
    run: (target, options, signal) => converse(target, script(options), signal),
  };
}
