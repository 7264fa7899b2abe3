import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EVENTS, eventCatalogMarkdown } from '../src/events.js';

// Every `event` the daemon logs is in the catalog (src/events.ts) and in the docs; every
// log call names its event, so operators can alert on `event` alone.

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
  );
}

const read = (f: string) => ({ file: f, text: readFileSync(f, 'utf8') });
const files = sources('src').map(read);
/**
 * The test and benchmark hooks (test/instrument/: test_wedge, samples_failed) name their
 * events too, but stay out of the catalog: it lists what a production daemon can log.
 */
const hookFiles = sources('test/instrument').map(read);

/** The event names the code logs; `damping_${e.type}` stands for the damping event types. */
function loggedEvents(): Set<string> {
  const names = new Set<string>();
  for (const { text } of files) {
    for (const m of text.matchAll(/event: '([a-z_]+)'/g)) names.add(m[1]!);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the source text of a template literal
    if (text.includes('event: `damping_${e.type}`')) {
      const damping = readFileSync('src/health/damping.ts', 'utf8');
      for (const m of damping.matchAll(/\{ type: '([a-z]+)'/g)) names.add(`damping_${m[1]}`);
    }
  }
  return names;
}

/** The first argument of every `log.<level>(` call, as written. */
function logCalls(): { file: string; first: string }[] {
  const calls: { file: string; first: string }[] = [];
  for (const { file, text } of [...files, ...hookFiles]) {
    for (const m of text.matchAll(/\blog\.(error|warn|info|debug)\(/g)) {
      let depth = 0;
      let i = m.index! + m[0].length;
      const start = i;
      for (; i < text.length; i++) {
        const c = text[i]!;
        if ('({['.includes(c)) depth++;
        else if (')}]'.includes(c)) {
          if (depth === 0) break;
          depth--;
        } else if (c === ',' && depth === 0) break;
      }
      calls.push({ file, first: text.slice(start, i).trim() });
    }
  }
  return calls;
}

describe('event catalog', () => {
  it('lists every event the code logs, and nothing else', () => {
    const logged = [...loggedEvents()].sort();
    expect(logged.filter((e) => !(e in EVENTS))).toEqual([]);
    expect(
      Object.keys(EVENTS)
        .filter((e) => !logged.includes(e))
        .sort(),
    ).toEqual([]);
  });

  it('leaves out the events only the test hooks log', () => {
    const hookEvents = hookFiles.flatMap(({ text }) => [...text.matchAll(/event: '([a-z_]+)'/g)].map((m) => m[1]!));
    expect(new Set(hookEvents)).toEqual(new Set(['test_wedge', 'samples_failed']));
    expect(hookEvents.filter((e) => e in EVENTS)).toEqual([]);
  });

  it('every log call names its event', () => {
    const calls = logCalls();
    expect(calls.length).toBeGreaterThan(40);
    const unnamed = calls.filter(({ file, first }) => {
      if (/\bevent:/.test(first)) return false;
      // A variable built earlier in the same file with its event: `const line = { event: ... }`.
      const name = /^\{?\s*\.\.\.(\w+)|^(\w+)$/.exec(first);
      const variable = name?.[1] ?? name?.[2];
      const text = [...files, ...hookFiles].find((f) => f.file === file)!.text;
      return !(variable && new RegExp(`const ${variable} = \\{[^}]*\\bevent:`, 's').test(text));
    });
    expect(unnamed).toEqual([]);
  });

  it('is in the docs as generated', () => {
    const doc = readFileSync('docs/operating.md', 'utf8');
    const between = /<!-- events:begin -->\n([\s\S]*?)\n<!-- events:end -->/.exec(doc)?.[1];
    expect(between, 'docs/operating.md: run `npm run docs`').toBe(eventCatalogMarkdown());
  });
});
