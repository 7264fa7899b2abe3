import net from 'node:net';
import { formatDuration } from '../config/duration.js';
import { createTimerHeap, type TimerEntry } from '../timer-heap.js';
import { DEFAULT_BOUNDS, describeSocketError, type ReadBounds } from './connection.js';
import {
  type Conversation,
  checkReply,
  FAREWELL_GRACE_MS,
  headVerdict,
  REPLY_LINE,
  type Reply,
  replyText,
  type Step,
  shorten,
  statelessPattern,
} from './conversation.js';
import { type ResponseHead, readHead } from './http-head.js';
import type { ProbeResult, ProbeTarget } from './types.js';

/**
 * The lean path of the connect/send/expect engine: one small state machine per check
 * instead of an async function awaiting each step. The socket has no stream reader
 * (`net.connect`'s `onread`: every check reads into one shared buffer), its deadline
 * sits on one timer heap for all checks (no AbortController, timer and listeners per
 * check), and the verdict's detail is a string built once at the end. It runs every
 * conversation without a TLS step (tcp, smtp without STARTTLS, expect, and the presets
 * in plain text); TLS needs Node's TLSSocket and runs on conversation.ts, with the same
 * steps, the same bounds and the same words.
 */

/** Conversations this engine can run: no TLS step. */
export function isLean(conversation: Conversation): boolean {
  return conversation.steps.every((step) => step.kind !== 'tls');
}

/** One buffer for every socket's reads: each chunk is turned into a string before the next read. */
const readBuffer = Buffer.allocUnsafe(65_536);

const deadlines = createTimerHeap();

/** In-flight checks per stop signal: one abort listener for all of them. */
const inFlight = new WeakMap<AbortSignal, Set<Exchange>>();

function inFlightOf(stop: AbortSignal): Set<Exchange> {
  let set = inFlight.get(stop);
  if (set === undefined) {
    const checks = new Set<Exchange>();
    set = checks;
    inFlight.set(stop, checks);
    stop.addEventListener(
      'abort',
      () => {
        for (const check of [...checks]) check.fail(`check aborted: shutting down (${check.phase})`);
      },
      { once: true },
    );
  }
  return set;
}

/** Runs one conversation (see isLean) within `timeoutMs`; never throws. */
export function runLean(
  target: ProbeTarget,
  conversation: Conversation,
  timeoutMs: number,
  stop?: AbortSignal,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    if (stop?.aborted) {
      resolve({ up: false, detail: 'check aborted: shutting down (connect)', latencyMs: 0, bytesRead: 0 });
      return;
    }
    new Exchange(target, conversation, timeoutMs, resolve, stop).start();
  });
}

class Exchange implements TimerEntry {
  due: number;
  slot = -1;
  phase = 'connect';
  private readonly started = performance.now();
  private socket: net.Socket | undefined;
  private step = 0;
  private buffer = '';
  private total = 0;
  private said = 'connected';
  /** Set once the verdict is known; later events only tidy up. */
  private settled = false;
  private ended = false;
  private closing = false;
  /** The http step's request is out. */
  private requested = false;
  /** The reply being read (multi-line) and its size so far. */
  private reply: Reply | undefined;
  private replySize = 0;
  private readonly bounds: ReadBounds;
  private readonly maxReplyBytes: number;

  constructor(
    private readonly target: ProbeTarget,
    private readonly conversation: Conversation,
    private readonly timeoutMs: number,
    private readonly resolve: (result: ProbeResult) => void,
    private readonly stop: AbortSignal | undefined,
  ) {
    this.due = this.started + timeoutMs;
    const bounds = conversation.bounds;
    this.bounds =
      bounds === undefined
        ? DEFAULT_BOUNDS
        : {
            maxLineBytes: bounds.maxLineBytes ?? DEFAULT_BOUNDS.maxLineBytes,
            maxTotalBytes: bounds.maxTotalBytes ?? DEFAULT_BOUNDS.maxTotalBytes,
          };
    this.maxReplyBytes = bounds?.maxReplyBytes ?? 4096;
  }

  start(): void {
    deadlines.add(this);
    if (this.stop) inFlightOf(this.stop).add(this);
    const socket = net.connect({
      host: this.target.address,
      port: this.target.port,
      noDelay: true,
      onread: { buffer: readBuffer, callback: (n) => this.onRead(n) },
    });
    this.socket = socket;
    socket.once('connect', () => this.onConnect());
    socket.on('error', (err) => this.onError(err));
    socket.once('end', () => this.onEnd());
    socket.once('close', () => this.onClose());
  }

  /** The deadline (TimerEntry): the whole check's timeout, or the farewell's grace. */
  fire(): void {
    if (this.settled) this.reset();
    else this.fail(`timeout after ${formatDuration(this.timeoutMs)} (${this.phase})`);
  }

  fail(detail: string): void {
    if (this.settled) return;
    this.finish(false, detail);
    this.reset();
  }

  private finish(up: boolean, detail: string): void {
    this.settled = true;
    this.stop && inFlight.get(this.stop)?.delete(this);
    deadlines.remove(this);
    this.resolve({
      up,
      detail,
      latencyMs: Math.round((performance.now() - this.started) * 10) / 10,
      bytesRead: this.total,
    });
  }

  private onConnect(): void {
    if (this.settled) return;
    this.advance();
  }

  private onRead(n: number): boolean {
    this.total += n;
    if (this.settled) {
      // After the verdict (farewell): drained within the byte bound, never parsed.
      if (this.total > this.bounds.maxTotalBytes) this.reset();
      return true;
    }
    if (this.total > this.bounds.maxTotalBytes) {
      this.fail(`${this.phase}: backend sent more than ${this.bounds.maxTotalBytes} bytes`);
      return false;
    }
    this.buffer += readBuffer.toString('latin1', 0, n);
    this.advance();
    return true;
  }

  private onEnd(): void {
    this.ended = true;
    if (!this.settled) this.advance();
    else this.farewellDone();
  }

  private onError(err: Error): void {
    this.fail(describeSocketError(err, this.phase));
  }

  private onClose(): void {
    if (!this.settled) {
      this.ended = true;
      this.advance();
      this.fail(`${this.phase}: connection closed by backend`);
    }
    deadlines.remove(this);
  }

  /** Runs steps as far as what was received allows; the verdict when the last one passed. */
  private advance(): void {
    const steps = this.conversation.steps;
    while (!this.settled) {
      const step = steps[this.step];
      if (step === undefined) {
        this.succeed();
        return;
      }
      this.phase = step.phase;
      if (step.kind === 'send') {
        this.socket!.write(step.data, 'latin1');
        this.step++;
        continue;
      }
      // A TLS step never gets here: isLean() keeps those conversations on conversation.ts.
      const done = step.kind === 'tls' ? `${step.phase}: TLS is not run by this engine` : this.expect(step);
      if (done === undefined) return; // wait for more
      if (done !== true) {
        this.fail(done);
        return;
      }
      this.step++;
    }
  }

  /** true: the step passed; a string: why it failed; undefined: it needs more bytes. */
  private expect(step: Exclude<Step, { kind: 'send' | 'tls' }>): true | string | undefined {
    if (step.kind === 'search') return this.search(step.match);
    if (step.kind === 'http') return this.http(step);
    for (;;) {
      const line = this.nextLine();
      if (typeof line !== 'object') return line;
      const text = line.text;
      if (step.kind === 'line') {
        if (this.said === 'connected') this.said = text;
        const ok = typeof step.match === 'string' ? text.startsWith(step.match) : step.match.test(text);
        return ok ? true : `${step.phase}: expected ${String(step.match)}, got "${shorten(text)}"`;
      }
      // A line of a multi-line reply (conversation.ts's readReply, one line at a time).
      this.replySize += text.length + 2;
      if (this.replySize > this.maxReplyBytes) return `${this.phase}: reply longer than ${this.maxReplyBytes} bytes`;
      let reply = this.reply;
      if (step.style === 'ftp' && reply !== undefined) {
        reply.lines.push(text);
        if (text === reply.code || text.startsWith(`${reply.code} `)) return this.replied(step, reply);
        continue;
      }
      const m = REPLY_LINE.exec(text);
      if (!m) return `${this.phase}: malformed reply "${shorten(text)}"`;
      if (reply !== undefined && m[1] !== reply.code)
        return `${this.phase}: reply code changed from ${reply.code} to ${m[1]} inside one reply`;
      if (reply === undefined) this.reply = reply = { code: m[1]!, lines: [] };
      reply.lines.push(text);
      if (m[2] !== '-') return this.replied(step, reply);
    }
  }

  private replied(step: Extract<Step, { kind: 'reply' }>, reply: Reply): true | string {
    this.reply = undefined;
    this.replySize = 0;
    if (this.said === 'connected') this.said = replyText(reply);
    return checkReply(step, reply) ?? true;
  }

  /** The next whole line (without CR LF), or why there is none, or undefined to wait. */
  private nextLine(): { text: string } | string | undefined {
    const buffer = this.buffer;
    const max = this.bounds.maxLineBytes;
    const nl = buffer.indexOf('\n');
    if (nl >= 0) {
      const text = buffer.slice(0, nl > 0 && buffer.charCodeAt(nl - 1) === 13 ? nl - 1 : nl);
      this.buffer = buffer.slice(nl + 1);
      if (text.length > max) return `${this.phase}: line longer than ${max} bytes`;
      return { text };
    }
    if (buffer.length > max) return `${this.phase}: line longer than ${max} bytes`;
    if (!this.ended) return undefined;
    return buffer.length > 0
      ? `${this.phase}: connection closed in the middle of a line`
      : `${this.phase}: connection closed by backend`;
  }

  private http(step: Extract<Step, { kind: 'http' }>): true | string | undefined {
    if (!this.requested) {
      this.requested = true;
      this.socket!.write(step.request(this.target), 'latin1');
    }
    const head = readHead(this.buffer);
    if (head === undefined) return this.ended ? `${this.phase}: connection closed by backend` : undefined;
    const verdict = headVerdict(head, step.expectStatus);
    if (!verdict.up) return verdict.detail;
    this.buffer = this.buffer.slice((head as ResponseHead).end);
    this.said = verdict.detail;
    return true;
  }

  private search(match: string | RegExp): true | string | undefined {
    const buffer = this.buffer;
    let end = -1;
    let found = '';
    if (typeof match === 'string') {
      const at = buffer.indexOf(match);
      if (at >= 0) {
        found = match;
        end = at + match.length;
      }
    } else {
      const m = statelessPattern(match).exec(buffer);
      if (m) {
        found = m[0];
        end = m.index + found.length;
      }
    }
    if (end < 0) return this.ended ? `${this.phase}: connection closed by backend` : undefined;
    this.buffer = buffer.slice(end);
    if (this.said === 'connected') this.said = found.trim();
    return true;
  }

  private succeed(): void {
    this.finish(true, shorten(this.said));
    const farewell = this.conversation.farewell;
    if (farewell === undefined) {
      this.reset();
      return;
    }
    // The backend closes first after the farewell (its side keeps the TIME_WAIT); one
    // that does not within the grace is reset by the deadline.
    this.phase = 'closing';
    this.due = performance.now() + FAREWELL_GRACE_MS;
    deadlines.add(this);
    if (farewell !== '') this.socket!.write(farewell, 'latin1');
    if (this.ended) this.farewellDone();
  }

  private farewellDone(): void {
    const socket = this.socket!;
    if (this.closing || socket.destroyed) return;
    this.closing = true;
    socket.end();
  }

  /** Tear down now with a RST (no TIME_WAIT on our side), unless our FIN is under way. */
  private reset(): void {
    deadlines.remove(this);
    const socket = this.socket;
    if (socket === undefined || socket.destroyed) return;
    // A RST racing a pending shutdown request leaks the handle on Node 20: destroy plainly then.
    if (socket.writableEnded || socket.connecting) socket.destroy();
    else socket.resetAndDestroy();
  }
}
