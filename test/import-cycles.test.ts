import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// src/ has no import cycle, type imports included: data flows one way (config -> plan ->
// probes, health, kernel -> daemon -> ops -> cli), and a cycle is where that breaks.

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
  );
}

/** Relative imports and re-exports of one file, resolved to .ts paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/gm)].map((m) => m[1]!);
  return found.map((spec) => path.join(path.dirname(file), spec.replace(/\.js$/, '.ts')));
}

function findCycles(files: string[]): string[][] {
  const graph = new Map(files.map((f) => [f, importsOf(f)]));
  const cycles: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const next of graph.get(f) ?? []) {
      if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next) && graph.has(next)) visit(next);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  return cycles;
}

describe('src/ import graph', () => {
  it('finds a cycle when there is one (the checker works)', () => {
    const dir = path.join('test', 'fixtures', 'cycle');
    expect(findCycles(sources(dir)).map((c) => c.map((f) => path.basename(f)))).toEqual([['a.ts', 'b.ts', 'a.ts']]);
  });

  it('has no import cycle, type imports included', () => {
    const cycles = findCycles(sources('src')).map((c) => c.map((f) => path.relative('src', f)).join(' -> '));
    expect(cycles).toEqual([]);
  });
});
