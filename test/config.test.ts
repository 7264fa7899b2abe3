import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../src/config/duration.js';
import { ConfigError } from '../src/config/load.js';
import { loadConfig, loadPlan, parseConfig, parsePlan } from '../src/plan/load.js';

const EXAMPLE = new URL('../config/example.yaml', import.meta.url).pathname;

function problems(yaml: string): string[] {
  try {
    parseConfig(yaml, 'c.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  throw new Error('config was accepted');
}

const MINIMAL = `services:
  - name: mail
    port: 25
    backends:
      - name: mail1
        address: 127.0.0.1
`;

describe('durations', () => {
  it.each([
    ['250ms', 250],
    ['2s', 2000],
    ['1m', 60_000],
    ['1m30s', 90_000],
    ['1.5s', 1500],
    ['1h', 3_600_000],
  ])('%s is %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['2', '2x', 's', '', '-1s', '1 s', '2sec'])('%j is rejected', (text) =>
    expect(parseDuration(text)).toBeUndefined(),
  );

  it('formats back the way people write them', () => {
    expect([500, 2000, 60_000, 90_000, 1500].map(formatDuration)).toEqual(['500ms', '2s', '1m', '1m30s', '1500ms']);
  });
});

describe('config', () => {
  it('accepts the recipe example as written', () => {
    const plan = loadPlan(EXAMPLE);
    const config = plan.config;
    expect(config.writer).toEqual({ type: 'condition', dir: '/proc/net/nf_condition', upValue: 0 });
    const backends = plan.backends;
    expect(backends.map((b) => [b.id, b.address, b.port, b.check.type, b.target.label])).toEqual([
      ['mail/mail1', '192.168.0.1', 25, 'smtp', '/proc/net/nf_condition/mail1up'],
      ['mail/mail2', '192.168.0.2', 25, 'smtp', '/proc/net/nf_condition/mail2up'],
    ]);
    expect(backends[0]).toMatchObject({ interval: 2000, fastInterval: 500, timeout: 3000, rise: 2, fall: 3 });
  });

  it('applies defaults, then service values, then backend values', () => {
    const plan = parsePlan(`defaults: {interval: 4s, rise: 5}
services:
  - name: web
    port: 80
    interval: 3s
    fall: 7
    check: {type: http, path: /health}
    backends:
      - {name: web1, address: 10.0.0.11, interval: 1s, port: 8080}
      - {name: web2, address: "2001:db8::2", check: {type: tcp}}
      - {name: web3, address: backend3.example.org}
`);
    const [a, b, c] = plan.backends;
    expect(a).toMatchObject({
      interval: 1000,
      rise: 5,
      fall: 7,
      port: 8080,
      check: { type: 'http', path: '/health', method: 'GET', expectStatus: ['200-399'] },
    });
    expect(b).toMatchObject({ interval: 3000, port: 80, check: { type: 'tcp' }, address: '2001:db8::2' });
    expect(c).toMatchObject({ address: 'backend3.example.org', timeout: 1500, fastInterval: 500 });
    // Without `condition`, the backend's name is its condition.
    expect(c!.target.key).toBe('web3');
  });

  it('names file, line, column and key for every error at once', () => {
    const got = problems(`defaults:
  interval: 2x
  rise: 0
  bogus: true
writer:
  type: condition
  dir: relative/path
services:
  - name: mail
    port: 99999
    check: {type: smtpp}
    backends:
      - name: mail1
        address: 192.168.0.1
        condition: a/b
      - name: mail1
        address: "not an address!"
      - name: mail3
        address: 192.168.0.3
        condition: mail1up-but-this-name-is-far-too-long
`);
    expect(got).toEqual([
      expect.stringMatching(/^c\.yaml:2:13: defaults\.interval: "2x" is not a duration/),
      expect.stringMatching(/^c\.yaml:3:9: defaults\.rise: .*>=1/),
      'c.yaml:4:3: defaults.bogus: unknown key "bogus"',
      'c.yaml:7:8: writer.dir: expected an absolute path',
      expect.stringMatching(/^c\.yaml:10:11: services\[0\]\.port: .*<=65535/),
      expect.stringMatching(
        /^c\.yaml:11:19: services\[0\]\.check\.type: unknown check type: expected one of tcp, smtp, http, /,
      ),
      'c.yaml:15:20: services[0].backends[0].condition: a condition name cannot contain "/"',
      'c.yaml:16:15: services[0].backends[1].name: duplicate backend name "mail1" (also services[0].backends[0])',
      'c.yaml:17:18: services[0].backends[1].address: expected an IPv4 address, an IPv6 address or a host name',
      'c.yaml:20:20: services[0].backends[2].condition: a condition name has 1 to 30 printable characters and no spaces',
    ]);
  });

  it.each([
    ['rise below 1', 'defaults: {rise: 0}\n', /defaults\.rise: .*>=1/],
    ['fall below 1', 'defaults: {fall: 0}\n', /defaults\.fall: .*>=1/],
    [
      'a timeout far longer than the interval',
      'defaults: {interval: 1s, timeout: 5s}\n',
      /^c\.yaml:1:35: defaults\.timeout: timeout 5s is longer than twice the interval \(1s\)/,
    ],
    [
      'fastInterval longer than interval',
      'defaults: {interval: 1s, fastInterval: 2s}\n',
      /defaults\.fastInterval: fastInterval 2s is longer than interval 1s/,
    ],
    ['a duration without a unit', 'defaults: {interval: 2}\n', /defaults\.interval: expected a duration with a unit/],
    [
      'an unknown initialState',
      'initialState: maybe\n',
      /initialState: Invalid option: expected one of "up"\|"down"\|"kernel"/,
    ],
    ['a wrong type', 'concurrency: lots\n', /concurrency: Invalid input: expected number, received string/],
    ['a condition named ..', 'writer: {type: condition}\n', null],
  ])('rejects %s', (_what, prefix, pattern) => {
    if (pattern === null) {
      expect(problems(MINIMAL.replace('address: 127.0.0.1', 'address: 127.0.0.1\n        condition: ".."'))).toEqual([
        expect.stringMatching(/services\[0\]\.backends\[0\]\.condition: a condition name cannot be "\." or "\.\."/),
      ]);
      return;
    }
    const got = problems(prefix + MINIMAL);
    expect(got).toHaveLength(1);
    expect(got[0]).toMatch(pattern);
  });

  it('rejects duplicate service names and conditions driven twice', () => {
    const got = problems(`services:
  - name: a
    port: 25
    backends: [{name: a1, address: 127.0.0.1, condition: shared}]
  - name: a
    port: 26
    backends: [{name: a2, address: 127.0.0.1, condition: shared}]
`);
    expect(got).toEqual([
      'c.yaml:5:11: services[1].name: duplicate service name "a" (also services[0])',
      'c.yaml:7:58: services[1].backends[0].condition: condition "shared" is already driven by services[0].backends[0]',
    ]);
  });

  it('reports YAML syntax errors with their position', () => {
    const got = problems('services:\n  - name: a\n   port: 1\n');
    expect(got[0]).toMatch(/^c\.yaml:3:\d+: \(top\): YAML: /);
  });

  it('reports a missing required key at its parent', () => {
    expect(problems('services:\n  - name: a\n    backends: [{name: b, address: 127.0.0.1}]\n')).toEqual([
      'c.yaml:2:5: services[0].port: missing required key "port"',
    ]);
  });

  it('reports an unreadable file by name', () => {
    expect(() => loadConfig('/nonexistent/nf-healthd.yaml')).toThrow(
      '/nonexistent/nf-healthd.yaml:1:1: (top): cannot read the file: ENOENT',
    );
  });

  it('keeps the example file byte for byte as the issue wrote it (comments aside)', () => {
    const text = readFileSync(EXAMPLE, 'utf8');
    expect(text).toContain('upValue: 0           # the recipe\'s rules use "! --condition": 0 means up');
  });
});
