/**
 * conntrack(8) for the connection lifecycle: one `conntrack -L` per interval counts the
 * open flows of every backend by its mark (streamed, never held whole in memory), and
 * `conntrack -D` deletes the flows of one backend (drain deadline, reaping on failure).
 * argv arrays only, never a shell; every call has a timeout.
 */
import { spawn } from 'node:child_process';

/** TCP states of a flow that is over: not counted as open. */
const CLOSED_STATES = new Set(['TIME_WAIT', 'CLOSE']);
/** A listing that runs longer than this is killed (a table of millions of flows, a wedged netlink). */
const LIST_TIMEOUT_MS = 10_000;
/** Bytes of stderr kept for a message. */
const STDERR_LIMIT = 4096;

export interface FlowLine {
  protocol: string;
  /** TCP state (`ESTABLISHED`, `SYN_SENT`, ...); undefined for protocols without one. */
  state: string | undefined;
  mark: number;
}

/** One line of `conntrack -L` (default output): `tcp 6 431999 ESTABLISHED src=... mark=257 use=1`. */
export function parseFlowLine(line: string): FlowLine | undefined {
  const fields = line.trim().split(/\s+/);
  const markField = fields.find((f) => f.startsWith('mark='));
  if (fields.length < 3 || !markField) return undefined;
  const mark = Number(markField.slice(5));
  if (!Number.isInteger(mark)) return undefined;
  const protocol = fields[0]!;
  const state = protocol === 'tcp' && /^[A-Z_]+$/.test(fields[3] ?? '') ? fields[3] : undefined;
  return { protocol, state, mark };
}

export function isOpen(flow: FlowLine): boolean {
  return flow.state === undefined || !CLOSED_STATES.has(flow.state);
}

export class ConntrackError extends Error {}

interface Run {
  code: number | null;
  stderr: string;
}

/** Runs conntrack, handing stdout lines to `onLine` as they come. */
function run(conntrack: string, args: readonly string[], onLine?: (line: string) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(conntrack, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      signal: AbortSignal.timeout(LIST_TIMEOUT_MS),
    });
    let stderr = '';
    let rest = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (!onLine) return;
      rest += chunk;
      let nl = rest.indexOf('\n');
      while (nl >= 0) {
        onLine(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
        nl = rest.indexOf('\n');
      }
      // A line longer than any flow line: not conntrack's output.
      if (rest.length > 4096) rest = '';
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += chunk.slice(0, STDERR_LIMIT - stderr.length);
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.name === 'AbortError' ? `timed out after ${LIST_TIMEOUT_MS} ms` : (err.code ?? err.message);
      reject(new ConntrackError(`${conntrack} ${args.join(' ')}: ${why}`));
    });
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

/** Open flows per mark, for the marks asked about; one listing of the whole table. */
export async function countFlows(conntrack: string, marks: ReadonlySet<number>): Promise<Map<number, number>> {
  const counts = new Map<number, number>([...marks].map((m) => [m, 0]));
  const r = await run(conntrack, ['-L'], (line) => {
    const flow = parseFlowLine(line);
    if (flow && counts.has(flow.mark) && isOpen(flow)) counts.set(flow.mark, counts.get(flow.mark)! + 1);
  });
  if (r.code !== 0) throw new ConntrackError(`${conntrack} -L failed (exit ${r.code}): ${r.stderr.trim()}`);
  return counts;
}

/** Which flows of a backend to delete. */
export type FlowSelection = 'all' | 'udp' | 'syn-sent';

const SELECTIONS: Record<FlowSelection, string[]> = {
  all: [],
  udp: ['-p', 'udp'],
  'syn-sent': ['-p', 'tcp', '--state', 'SYN_SENT'],
};

/** Deletes the selected flows with this mark; resolves with how many conntrack deleted. */
export async function deleteFlows(conntrack: string, mark: number, selection: FlowSelection): Promise<number> {
  if (!Number.isInteger(mark) || mark <= 0 || mark > 0xffffffff) throw new ConntrackError(`refusing mark ${mark}`);
  const r = await run(conntrack, ['-D', ...SELECTIONS[selection], '--mark', String(mark)]);
  const deleted = /(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted/.exec(r.stderr);
  // conntrack exits 1 when nothing matched ("0 flow entries"): not a failure.
  if (deleted) return Number(deleted[1]);
  if (r.code === 0) return 0;
  throw new ConntrackError(`${conntrack} -D --mark ${mark} failed (exit ${r.code}): ${r.stderr.trim()}`);
}
