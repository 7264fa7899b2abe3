import { describe, expect, it } from 'vitest';
import { controlSocketPath } from '../src/config/operations.js';
import { closestName, eligible } from '../src/health/admin.js';
import { isOpen, parseFlowLine } from '../src/kernel/conntrack.js';
import { parseDeadline } from '../src/ops/control.js';
import { setCommand } from '../src/ops/set-command.js';

// The pure parts of drain and maintenance; the lifecycle on a real kernel is test/drain.

describe('conntrack lines', () => {
  // As conntrack 1.4.7 prints them (`conntrack -L`), from the test/drain namespaces.
  const tcp =
    'tcp      6 431999 ESTABLISHED src=10.202.1.2 dst=10.202.9.1 sport=51234 dport=7000 src=10.202.2.2 dst=10.202.1.2 sport=7000 dport=51234 [ASSURED] mark=257 use=1';
  const timeWait =
    'tcp      6 119 TIME_WAIT src=10.202.1.2 dst=10.202.9.1 sport=51236 dport=7000 src=10.202.2.2 dst=10.202.1.2 sport=7000 dport=51236 [ASSURED] mark=257 use=1';
  const udp =
    'udp      17 29 src=10.202.1.2 dst=10.202.9.1 sport=40000 dport=7001 [UNREPLIED] src=10.202.2.2 dst=10.202.1.2 sport=7001 dport=40000 mark=258 use=1';

  it('reads protocol, TCP state and mark', () => {
    expect(parseFlowLine(tcp)).toEqual({ protocol: 'tcp', state: 'ESTABLISHED', mark: 257 });
    expect(parseFlowLine(udp)).toEqual({ protocol: 'udp', state: undefined, mark: 258 });
  });

  it('TIME_WAIT and CLOSE are not open; UDP flows are', () => {
    expect(isOpen(parseFlowLine(tcp)!)).toBe(true);
    expect(isOpen(parseFlowLine(timeWait)!)).toBe(false);
    expect(isOpen(parseFlowLine(timeWait.replace('TIME_WAIT', 'CLOSE'))!)).toBe(false);
    expect(isOpen(parseFlowLine(udp)!)).toBe(true);
  });

  it('lines without a mark, and garbage, are skipped', () => {
    expect(parseFlowLine('conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.')).toBeUndefined();
    expect(parseFlowLine('')).toBeUndefined();
    expect(parseFlowLine('tcp 6 1 ESTABLISHED mark=lots')).toBeUndefined();
  });
});

describe('administrative state', () => {
  it('only ready and up is eligible for new connections', () => {
    expect(eligible(true, undefined)).toBe(true);
    expect(eligible(true, { state: 'ready', since: 0 })).toBe(true);
    expect(eligible(true, { state: 'drain', since: 0 })).toBe(false);
    expect(eligible(true, { state: 'maint', since: 0 })).toBe(false);
    expect(eligible(false, undefined)).toBe(false);
  });

  it('"did you mean" suggests a close name only', () => {
    const ids = ['web/app1', 'web/app2', 'mail/mx1'];
    expect(closestName('web/app11', ids)).toBe('web/app1');
    expect(closestName('mail/mx', ids)).toBe('mail/mx1');
    expect(closestName('dns/resolver', ids)).toBeUndefined();
  });

  it('deadlines in the config duration syntax, bounded', () => {
    expect(parseDeadline('3s')).toBe(3000);
    expect(parseDeadline('1h30m')).toBe(5_400_000);
    expect(parseDeadline('soon')).toBe('--deadline "soon": expected a duration such as 30s or 5m');
    expect(parseDeadline('0s')).toMatch(/expected a duration/);
    expect(parseDeadline('200h')).toBe('--deadline "200h": at most 168h (a week)');
  });

  it('the control socket sits beside the state file, named after it, unless set', () => {
    expect(controlSocketPath({ stateFile: '/run/nf-healthd/state.json' })).toBe('/run/nf-healthd/control.sock');
    expect(controlSocketPath({ stateFile: '/run/nf-healthd/edge.json' })).toBe('/run/nf-healthd/edge.control.sock');
    expect(controlSocketPath({ stateFile: '/run/x/state.json', controlSocket: '/run/y.sock' })).toBe('/run/y.sock');
  });
});

describe('nf-healthd set: usage errors before any daemon is asked', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) }, out, err };
  };

  for (const [args, deadline, message] of [
    [['svc/b1'], undefined, 'expected SERVICE/BACKEND and a state (ready, drain or maint)'],
    [['b1', 'drain'], undefined, '"b1" is not SERVICE/BACKEND'],
    [['svc/b1', 'off'], undefined, '"off" is not a state: ready, drain or maint'],
    [['svc/b1', 'maint'], '5m', '--deadline goes with drain only'],
  ] as const) {
    it(`${args.join(' ')}${deadline ? ` --deadline ${deadline}` : ''}: exit 64`, async () => {
      const t = io();
      expect(await setCommand(t.io, '/nonexistent/config.yaml', args, deadline)).toBe(64);
      expect(t.err.join('')).toBe(`nf-healthd set: ${message}. Try 'nf-healthd --help'.\n`);
      expect(t.out).toEqual([]);
    });
  }
});
