import net from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { duration } from './duration.js';

/**
 * Config keys for running the service (issue 6): state file, HTTP listener,
 * notify hooks, flap damping. Kept here so schema.ts only lists them.
 */

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * `9100`, `"9100"` or `":9100"` listen on loopback (127.0.0.1); `"0.0.0.0:9100"`,
 * `"[::]:9100"` or `"10.1.2.3:9100"` say where explicitly. Port 0 picks a free port.
 */
export function parseListen(text: string): ListenAddress | string {
  const s = text.trim();
  let host = '127.0.0.1';
  let portText = s;
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2]!;
  } else if (s.includes(':')) {
    const at = s.lastIndexOf(':');
    if (s.indexOf(':') !== at) return `"${s}": write an IPv6 address in brackets, such as [::1]:9100`;
    if (at > 0) host = s.slice(0, at);
    portText = s.slice(at + 1);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535)
    return `"${s}": expected a port (0 to 65535), ":PORT" or "ADDRESS:PORT"`;
  if (net.isIP(host) === 0 && host !== 'localhost')
    return `"${host}" is not an IP address: listen on an address, such as 127.0.0.1:9100`;
  return { host, port: Number(portText) };
}

export const listenAddress = z.union([z.number().int(), z.string()]).transform((value, ctx) => {
  const parsed = parseListen(String(value));
  if (typeof parsed === 'string') {
    ctx.addIssue({ code: 'custom', message: parsed });
    return z.NEVER;
  }
  return parsed;
});

export const httpSchema = z.strictObject({
  /** Off unless set. A bare port means loopback. */
  listen: listenAddress
    .optional()
    .describe(
      'Serve `/metrics`, `/status` and `/healthz` here: `9100` or `":9100"` mean 127.0.0.1:9100; `"0.0.0.0:9100"`, `"[::1]:9100"` say where. A reload may move or close it.',
    ),
  /** Serve `POST /backends/SERVICE/BACKEND/state` (what `nf-healthd set` does). Off: the listener only reads. */
  adminApi: z
    .boolean()
    .default(false)
    .describe(
      'Also serve `POST /backends/SERVICE/BACKEND/state` (what `nf-healthd set` does, docs/drain.md). Off: whoever reaches the listener could steer the balancing.',
    ),
});

/** A program and its arguments: run directly, never through a shell. */
const argv = z
  .array(z.string())
  .min(1, 'a hook is a program and its arguments, such as ["/usr/local/bin/page", "--team", "net"]')
  .refine(
    (a) => a[0]!.startsWith('/'),
    'the program must be an absolute path (hooks run without a shell and without PATH lookups)',
  );

export const notifySchema = z.strictObject({
  /** Run when a backend goes up. */
  up: argv.optional().describe('Program and arguments run when a backend goes up (an absolute path; no shell).'),
  /** Run when a backend goes down. */
  down: argv.optional().describe('Program and arguments run when a backend goes down (an absolute path; no shell).'),
  /** Run on every change, after `up`/`down`. */
  change: argv.optional().describe('Program and arguments run on every transition, after `up` or `down`.'),
  /** Run when a draining backend's last open flow is gone (`nf-healthd set ... drain`). */
  drained: argv
    .optional()
    .describe('Program and arguments run when a draining backend has no open connection left (docs/drain.md).'),
  /** A hook still running after this is killed (SIGKILL) and logged. */
  timeout: duration.default(10_000).describe('A hook still running after this is killed (SIGKILL) and logged.'),
  /** Hook processes at once, across all backends. */
  maxConcurrent: z.number().int().min(1).max(64).default(4).describe('Hook processes at once, across all backends.'),
});

export const dampingSchema = z.strictObject({
  /** State changes are counted inside this sliding window. */
  window: duration.default(60_000).describe('State changes are counted inside this sliding window.'),
  /** This many changes inside `window` count as flapping (4 = down, up, down, up). */
  changes: z
    .number()
    .int()
    .min(2)
    .default(4)
    .describe('This many state changes inside `window` count as flapping (4 = down, up, down, up).'),
  /** First hold time; each further hold doubles it, up to `maxHold`. */
  hold: duration
    .default(30_000)
    .describe('How long a flapping backend is held down the first time; each further hold doubles it.'),
  maxHold: duration.default(600_000).describe('The longest hold.'),
  /** Each `decay` of calm after a hold halves the next hold again (one step). */
  decay: duration.default(300_000).describe('Each `decay` without a state change takes one doubling of the hold back.'),
});

/** The track-file value that puts a keepalived instance in FAULT (with the track file's weight 1). */
export const VRRP_FAULT = -254;

export const vrrpSchema = z
  .strictObject({
    trackFile: z
      .string()
      .startsWith('/', 'expected an absolute path')
      .describe(
        "The file keepalived's `track_file` reads (weight 1): 0 with every backend up, a negative number as capacity falls, -254 (FAULT) with none, before the first round of checks and when the daemon stops.",
      ),
    penalty: z
      .number()
      .int()
      .min(1)
      .max(253)
      .default(100)
      .describe(
        'How far the priority drops as capacity nears zero: the value is -ceil(penalty × lost share). Set it above the priority gap between the balancers so that a balancer that lost much of its capacity yields the VIP.',
      ),
  })
  .describe('keepalived integration: a track file whose value follows the live capacity (docs/pair.md).');

export type HttpConfig = z.infer<typeof httpSchema>;
export type NotifyConfig = z.infer<typeof notifySchema>;
export type DampingConfig = z.infer<typeof dampingSchema>;
export type VrrpConfig = z.infer<typeof vrrpSchema>;

export const STATE_FILE_DEFAULT = '/run/nf-healthd/state.json';

/**
 * The control socket of a config: `controlSocket`, else beside the state file, named
 * after it (`state.json` gives `control.sock`, `edge.json` gives `edge.control.sock`), so
 * two daemons with different state files never share one.
 */
export function controlSocketPath(config: { stateFile: string; controlSocket?: string | undefined }): string {
  if (config.controlSocket) return config.controlSocket;
  const dir = path.dirname(config.stateFile);
  const stem = path.basename(config.stateFile).replace(/\.json$/, '');
  return path.join(dir, stem === 'state' ? 'control.sock' : `${stem}.control.sock`);
}

/** Top-level keys, spread into the config object in schema.ts. */
export const operationsKeys = {
  /** Where the daemon keeps its state for `status` and for restarts (replaced atomically). */
  stateFile: z
    .string()
    .startsWith('/', 'expected an absolute path')
    .default(STATE_FILE_DEFAULT)
    .describe(
      "The daemon's state, for `status` and for restarts: replaced atomically on every change and at least once per `interval`; the folder is created.",
    ),
  /** A state file older than this is not resumed at start: backends begin at initialState. */
  stateMaxAge: duration
    .default(300_000)
    .describe('A state file older than this is not resumed at start: backends begin at `initialState`.'),
  /** The unix socket `nf-healthd set` talks to; by default beside the state file. */
  controlSocket: z
    .string()
    .startsWith('/', 'expected an absolute path')
    // sun_path holds 108 bytes with the NUL.
    .max(107, 'a unix socket path has at most 107 bytes')
    .optional()
    .describe(
      "The unix socket `nf-healthd set` talks to (mode 0660, the daemon's group); by default beside the state file: `state.json` gives `control.sock`.",
    ),
  /** conntrack(8): counts a backend's flows, deletes them at a drain deadline and when it goes down. */
  conntrackPath: z
    .string()
    .startsWith('/', 'expected an absolute path')
    .default('/usr/sbin/conntrack')
    .describe(
      "conntrack(8): counts each backend's open connections, deletes flows at a drain deadline and when a backend goes down.",
    ),
  http: httpSchema.optional().describe('The HTTP listener for metrics and status; off unless set.'),
  notify: notifySchema.optional().describe('Programs run on transitions (hooks).'),
  /** Off unless set; `damping: {}` turns it on with the defaults. */
  damping: dampingSchema
    .optional()
    .describe('Flap damping: off unless set; `damping: {}` turns it on with the defaults.'),
  /** Off unless set: keepalived's track file (docs/pair.md). */
  vrrp: vrrpSchema.optional().describe('keepalived integration (docs/pair.md); off unless set.'),
};
