import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configurationSections, generatedDocs, undocumentedKeys } from '../src/config/reference.js';

/*
 * The docs (fast, no packages; in `npm run test:unit`): the configuration reference and the
 * man page's key list are what the zod schemas generate (regenerate with `npm run docs`),
 * every key is described, and every link in README.md and docs/ reaches a file and heading
 * that exist. test/man.test.ts renders the man pages.
 */

const ROOT = path.join(import.meta.dirname, '..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

describe('generated configuration reference', () => {
  it('is what `npm run docs` writes (docs/configuration.md, nf-healthd.yaml(5))', () => {
    for (const { file, content } of generatedDocs(read)) {
      expect(read(file), `${file} is stale: run npm run docs`).toBe(content);
    }
  });

  it('describes every key', () => {
    expect(undocumentedKeys()).toEqual([]);
  });

  it('lists every key of the schemas with its default, values and places', () => {
    const sections = configurationSections();
    const heading = (h: string) => sections.find((s) => s.heading === h)!;
    const top = heading('Top level').keys.map((k) => k.key);
    expect(top).toEqual(expect.arrayContaining(['defaults', 'writer', 'services', 'stateFile', 'http', 'damping']));
    const interval = heading('`defaults`').keys.find((k) => k.key === 'interval')!;
    expect(interval).toMatchObject({ type: 'duration', default: '`2s`' });
    expect(interval.alsoIn).toEqual(['services[]', 'services[].backends[]']);
    expect(heading('`damping`').keys.find((k) => k.key === 'maxHold')!.default).toBe('`10m`');
    expect(heading('Top level').keys.find((k) => k.key === 'initialState')!.values).toEqual(['up', 'down', 'kernel']);
    const checkTypes = sections.filter((s) => s.group === 'checks' && s.heading.startsWith('`check` type'));
    expect(checkTypes.map((s) => s.heading.match(/`(\w+)`$/)![1])).toEqual(
      expect.arrayContaining(['tcp', 'smtp', 'http', 'https', 'tls', 'expect', 'exec', 'redis', 'lmtp']),
    );
    expect(heading('`writer` type `nft`').keys.map((k) => k.key)).toContain('commandTimeout');
  });
});

/** Files other branches add in the same round of merges; links to them are checked once they exist. */
const ARRIVING = new Set<string>();

function markdownFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith('.md') ? [path.join(dir, e.name)] : [],
    );
  return ['README.md', 'BENCHMARKS.md', ...walk('docs')];
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes, repeats numbered. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of withoutCode(markdown).split('\n')) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

function withoutCode(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1\s*$/gm, '').replace(/^( {4}|\t).*$/gm, '');
}

function links(markdown: string): string[] {
  const text = withoutCode(markdown).replace(/`[^`\n]*`/g, '');
  return [...text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => m[1]!);
}

describe('links in README.md and docs/', () => {
  it('reach files and headings that exist', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const file of markdownFiles()) {
      for (const link of links(read(file))) {
        if (/^[a-z]+:/i.test(link)) continue; // https:, mailto:
        checked += 1;
        const [target = '', anchor] = link.split('#');
        const resolved = target === '' ? file : path.normalize(path.join(path.dirname(file), target));
        if (ARRIVING.has(resolved) && !existsSync(path.join(ROOT, resolved))) continue;
        if (!existsSync(path.join(ROOT, resolved))) {
          broken.push(`${file}: ${link} (no ${resolved})`);
          continue;
        }
        if (anchor && (!resolved.endsWith('.md') || !anchors(read(resolved)).has(anchor))) {
          broken.push(`${file}: ${link} (no heading #${anchor} in ${resolved})`);
        }
      }
    }
    expect(broken).toEqual([]);
    expect(checked).toBeGreaterThan(30);
  });

  it('computes anchors the way GitHub does', () => {
    const set = anchors(
      '# The kernel side: rules\n## `nf-healthd status`\n## Tests\n## Tests\n```\n# not a heading\n```\n',
    );
    expect([...set]).toEqual(['the-kernel-side-rules', 'nf-healthd-status', 'tests', 'tests-1']);
  });
});
