import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { type Document, isMap, isScalar, LineCounter, type Node, parseDocument } from 'yaml';
import type { z } from 'zod';
import { checkTypes } from '../probes/registry.js';
import { type Config, configSchema } from './schema.js';

/** One problem in a config file, located for an editor: `FILE:LINE:COLUMN: key.path: message`. */
export interface ConfigProblem {
  file: string;
  line: number;
  column: number;
  path: string;
  message: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.path === '' ? '(top)' : p.path}: ${p.message}`;
}

/** `services[0].backends[1].name` */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join('');
}

/** A cross-object rule's finding, located by key path like a schema issue. */
export interface PathProblem {
  path: readonly (string | number)[];
  message: string;
}

/** What reading a config file gave: the validated Config (when the schema passed), and a way to place problems. */
export interface ConfigDocument {
  file: string;
  /** The YAML as plain data, for rules that must also run when the schema fails. */
  raw: unknown;
  config: Config | undefined;
  problems: ConfigProblem[];
  /** FILE:LINE:COLUMN for a problem found after the schema (by the Plan). */
  place(problem: PathProblem): ConfigProblem;
}

/**
 * The largest config file read: 10,000 backends take well under 1 MiB. A bigger file (a
 * log or a disk image written to the wrong path) is refused before it is read or parsed.
 */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

/** The file's text, at most MAX_CONFIG_BYTES of it; a string is the problem in words. */
function readBounded(file: string): { text: string } | string {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const stat = fstatSync(fd);
    if (stat.isDirectory()) return 'cannot read the file: it is a directory';
    if (!stat.isFile()) return 'cannot read the file: not a regular file';
    // Read one byte past the limit: a file that grew since the stat is refused too.
    const buffer = Buffer.alloc(Math.min(stat.size, MAX_CONFIG_BYTES) + 1);
    let length = 0;
    for (let n = 1; n > 0 && length < buffer.length; length += n)
      n = readSync(fd, buffer, length, buffer.length - length, null);
    if (length > MAX_CONFIG_BYTES || stat.size > MAX_CONFIG_BYTES)
      return `the file is larger than ${MAX_CONFIG_BYTES / 1024 / 1024} MiB (${stat.size} bytes): not read`;
    return { text: buffer.toString('utf8', 0, length) };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return `cannot read the file: ${e.code ?? e.message}`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Reads a config file; a file that cannot be read is one problem at 1:1. */
export function readConfigFile(file: string): ConfigDocument {
  const read = readBounded(file);
  if (typeof read === 'string') {
    const problem = { file, line: 1, column: 1, path: '', message: read };
    return { file, raw: undefined, config: undefined, problems: [problem], place: () => problem };
  }
  return readConfigText(read.text, file);
}

/** Parses YAML and validates it against the schema, collecting every problem with its position. */
export function readConfigText(text: string, file = '<config>'): ConfigDocument {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const at = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const place = (p: PathProblem) =>
    locate(doc, { code: 'custom', path: [...p.path], message: p.message } as Issue, file, at)[0]!;
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({
      file,
      ...at(e.pos[0]),
      path: '',
      message: `YAML: ${e.message.split('\n')[0]}`,
    }));
    return { file, raw: undefined, config: undefined, problems, place };
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    // The yaml library refuses alias expansion past maxAliasCount (a "billion laughs" file).
    const problem = { file, line: 1, column: 1, path: '', message: `YAML: ${(err as Error).message}` };
    return { file, raw: undefined, config: undefined, problems: [problem], place };
  }
  const result = configSchema.safeParse(raw);
  if (result.success) return { file, raw, config: result.data, problems: [], place };
  const problems = result.error.issues.flatMap((issue) => locate(doc, issue, file, at));
  return { file, raw, config: undefined, problems, place };
}

/** Problems in file order. */
export function sortProblems(problems: ConfigProblem[]): ConfigProblem[] {
  return problems.sort((a, b) => a.line - b.line || a.column - b.column);
}

type Issue = z.core.$ZodIssue;

function locate(
  doc: Document,
  issue: Issue,
  file: string,
  at: (offset: number) => { line: number; column: number },
): ConfigProblem[] {
  const path = issue.path.filter((k): k is string | number => typeof k !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    const map = doc.getIn(path, true);
    return issue.keys.map((key) => {
      let offset = nodeOffset(map);
      if (isMap(map)) {
        const pair = map.items.find((p) => isScalar(p.key) && p.key.value === key);
        if (pair && isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
      }
      return { file, ...at(offset), path: formatPath([...path, key]), message: `unknown key "${key}"${suggest(key)}` };
    });
  }
  // Point at the deepest node that exists: a missing key is reported at its parent.
  let node: unknown;
  let depth = path.length;
  for (; depth >= 0; depth--) {
    node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth), true);
    if (node !== undefined) break;
  }
  let message = issue.message;
  if (
    (issue.code === 'invalid_union' && path.at(-1) === 'check') ||
    (issue.code === 'invalid_union' && path.at(-1) === 'type')
  ) {
    message = `unknown check type: expected one of ${checkTypes.join(', ')}`;
  } else if (depth < path.length && issue.code === 'invalid_type') {
    message = `missing required key "${String(path.at(-1))}"`;
  }
  return [{ file, ...at(nodeOffset(node)), path: formatPath(path), message }];
}

function nodeOffset(node: unknown): number {
  const range = (node as Node | undefined)?.range;
  if (range) return range[0];
  return 0;
}

const KNOWN_HINTS: Record<string, string> = {
  fast_interval: 'fastInterval',
  fastinter: 'fastInterval',
  inter: 'interval',
  initial_state: 'initialState',
  upvalue: 'upValue',
  expect_status: 'expectStatus',
  expect_body: 'expectBody',
  in_interface: 'inInterface',
};

function suggest(key: string): string {
  const hint = KNOWN_HINTS[key.toLowerCase()];
  return hint ? ` (did you mean "${hint}"?)` : '';
}
