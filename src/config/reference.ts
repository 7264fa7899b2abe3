import { z } from 'zod';
import { checkSchema } from '../probes/registry.js';
import { duration, formatDuration } from './duration.js';
import { address, conditionName, ipAddress, objectName, port } from './names.js';
import { listenAddress } from './operations.js';
import { configSchema, TIMING_DEFAULTS } from './schema.js';
import { binaryPath } from './writers.js';

/**
 * The configuration reference, generated from the zod schemas and their `.describe()`
 * texts so that it cannot drift from what the loader accepts. `npm run docs` writes it
 * to docs/configuration.md and into the nf-healthd.yaml(5) man page source;
 * test/docs.test.ts fails when either is stale or a key has no description.
 */

type Schema = z.core.$ZodType;
type Def = z.core.$ZodTypeDef & Record<string, unknown>;

/** One documented key. */
export interface KeyDoc {
  key: string;
  type: string;
  /** Allowed values, when the type is a closed set. */
  values?: string[];
  /** `required`, a default in config syntax, a computed default in words, or empty. */
  default: string;
  description: string;
  /** Other sections where the same key (the same schema) can be set. */
  alsoIn: string[];
}

/** One object of the config: where it sits in the file, and its keys. */
export interface SectionDoc {
  /** The heading, such as `services[].backends[]` or `check` type `smtp`. */
  heading: string;
  /** What the object is (check types, writers: what selects them and what they do). */
  intro: string;
  keys: KeyDoc[];
  /** Check types come after the config's own objects. */
  group: 'config' | 'checks';
}

const def = (schema: Schema): Def => schema._zod.def as Def;
const descriptionOf = (schema: Schema): string | undefined => z.globalRegistry.get(schema)?.description;

/** Shared field types, named by identity (`.describe()` clones a schema but keeps its def). */
const NAMED_TYPES = new Map<Def, string>([
  [def(duration), 'duration'],
  [def(objectName), 'name'],
  [def(conditionName), 'condition name'],
  [def(address), 'address or host name'],
  [def(ipAddress), 'IP address'],
  [def(port), 'port (1–65535)'],
  [def(binaryPath), 'program name or absolute path'],
  [def(listenAddress), 'port or address:port'],
]);

/** Defaults applied in code rather than by the schema (timing resolves backend, service, defaults). */
function computedDefaults(): Map<Schema, string> {
  const timing = (def(configSchema).shape as Record<string, Schema>).defaults!;
  const shape = def(unwrap(timing).core).shape as Record<string, Schema>;
  const out = new Map<Schema, string>();
  for (const [key, value] of Object.entries(TIMING_DEFAULTS)) {
    const field = shape[key];
    if (field) out.set(field, key === 'rise' || key === 'fall' ? `\`${value}\`` : `\`${formatDuration(value)}\``);
  }
  if (shape.downInterval) out.set(shape.downInterval, '`interval`');
  return out;
}

interface Unwrapped {
  core: Schema;
  description?: string;
  defaultValue?: unknown;
  hasDefault: boolean;
  optional: boolean;
}

/** Peels optional/default wrappers, keeping the outermost description and the default. */
function unwrap(schema: Schema): Unwrapped {
  const out: Unwrapped = { core: schema, hasDefault: false, optional: false };
  let current = schema;
  for (;;) {
    out.description ??= descriptionOf(current);
    const d = def(current);
    if (d.type === 'optional') out.optional = true;
    else if (d.type === 'default' || d.type === 'prefault') {
      if (!out.hasDefault) out.defaultValue = d.defaultValue;
      out.hasDefault = true;
    } else if (d.type !== 'nullable' && d.type !== 'readonly') break;
    current = d.innerType as Schema;
  }
  out.core = current;
  return out;
}

const code = (value: unknown): string => `\`${typeof value === 'string' ? value : JSON.stringify(value)}\``;

function formatDefault(core: Schema, value: unknown): string {
  if (NAMED_TYPES.get(def(core)) === 'duration' && typeof value === 'number') return code(formatDuration(value));
  if (Array.isArray(value)) return code(`[${value.map((v) => (typeof v === 'string' ? `"${v}"` : v)).join(', ')}]`);
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    return entries.length === 0 ? '`{}`' : code(`{${entries.map(([k, v]) => `${k}: ${v}`).join(', ')}}`);
  }
  return code(value);
}

const SAFE = Number.MAX_SAFE_INTEGER;

/** The type in words, and the allowed values when they are a closed set. */
function typeOf(core: Schema): { type: string; values?: string[] } {
  const named = NAMED_TYPES.get(def(core));
  if (named) return { type: named };
  const d = def(core);
  switch (d.type) {
    case 'boolean':
      return { type: 'boolean' };
    case 'enum':
      return { type: 'one of', values: Object.values(d.entries as Record<string, string>).map(String) };
    case 'literal':
      return { type: 'constant', values: (d.values as unknown[]).map(String) };
    case 'record':
      return { type: `map of ${typeOf(d.valueType as Schema).type}` };
    case 'object':
      return { type: 'object' };
    case 'array': {
      const item = unwrap(d.element as Schema).core;
      const json = jsonOf(core);
      const count =
        json.minItems !== undefined && json.maxItems !== undefined
          ? ` (${json.minItems} to ${json.maxItems})`
          : json.minItems !== undefined
            ? ` (at least ${json.minItems})`
            : '';
      const itemType = def(item).type === 'union' ? itemUnionType(item) : typeOf(item).type;
      return { type: `list of ${itemType === 'object' ? 'objects' : itemType}${count}` };
    }
    case 'union': {
      const options = d.options as Schema[];
      if (options.every((o) => def(o).type === 'literal')) {
        return { type: 'one of', values: options.flatMap((o) => (def(o).values as unknown[]).map(String)) };
      }
      return { type: itemUnionType(core) };
    }
    case 'pipe':
      return typeOf(d.in as Schema);
    case 'number': {
      const json = jsonOf(core);
      const kind = json.type === 'integer' ? 'integer' : 'number';
      const lo = typeof json.minimum === 'number' && json.minimum > -SAFE ? json.minimum : undefined;
      const hi = typeof json.maximum === 'number' && json.maximum < SAFE ? json.maximum : undefined;
      if (lo !== undefined && hi !== undefined) return { type: `${kind} (${lo}–${hi})` };
      if (lo !== undefined) return { type: `${kind} (≥ ${lo})` };
      return { type: kind };
    }
    default:
      return { type: String(d.type) };
  }
}

/** `check`, `writer`, a step, or `integer or string`. */
function itemUnionType(core: Schema): string {
  if (def(core) === def(checkSchema)) return 'check';
  if (typeof def(core).discriminator === 'string') return 'object, by `type`';
  const options = def(core).options as Schema[];
  if (options.every((o) => def(o).type === 'object')) return 'step';
  return [...new Set(options.map((o) => typeOf(o).type))].join(' or ');
}

function jsonOf(schema: Schema): Record<string, number | string | undefined> {
  return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, number | string | undefined>;
}

/** Walks the config schema into sections, in the order an admin writes the file. */
export function configurationSections(): SectionDoc[] {
  const computed = computedDefaults();
  const sections: SectionDoc[] = [];
  const checkTypes: SectionDoc[] = [];
  /** Every place a key's schema occurs outside the check types, for "also in". */
  const occurrences = new Map<Schema, { doc: KeyDoc; path: string }[]>();

  const keyDoc = (key: string, schema: Schema, path: string, group: SectionDoc['group']): KeyDoc => {
    const u = unwrap(schema);
    const { type, values } = typeOf(u.core);
    const doc: KeyDoc = {
      key,
      type,
      ...(values ? { values } : {}),
      default: u.hasDefault
        ? formatDefault(u.core, u.defaultValue)
        : (computed.get(schema) ?? (u.optional ? '' : 'required')),
      description: u.description ?? '',
      alsoIn: [],
    };
    if (group === 'config') occurrences.set(schema, [...(occurrences.get(schema) ?? []), { doc, path }]);
    return doc;
  };

  const add = (section: SectionDoc) => (section.group === 'checks' ? checkTypes : sections).push(section);

  /** `path` is the object's place in the file; `heading` says it for a reader. */
  const walkObject = (object: Schema, path: string, heading: string, intro: string, group: SectionDoc['group']) => {
    const section: SectionDoc = { heading, intro, keys: [], group };
    add(section);
    const nested: (() => void)[] = [];
    const suffix = group === 'checks' ? ` (check type ${heading.slice(heading.lastIndexOf(' ') + 1)})` : '';
    for (const [key, schema] of Object.entries(def(object).shape as Record<string, Schema>)) {
      const doc = keyDoc(key, schema, path, group);
      section.keys.push(doc);
      const core = unwrap(schema).core;
      const d = def(core);
      const child = path === '' ? key : `${path}.${key}`;
      if (key === 'type' && d.type === 'literal' && descriptionOf(object)) {
        doc.description ||= `Selects this ${path === 'check' ? 'check type' : path}, described above.`;
      }
      if (d.type === 'object') nested.push(() => walkObject(core, child, `\`${child}\`${suffix}`, '', group));
      else if (d.type === 'union' || d.type === 'array') nested.push(() => walkValue(core, child, suffix, group));
    }
    for (const walk of nested) walk();
  };

  const walkValue = (core: Schema, path: string, suffix: string, group: SectionDoc['group']): void => {
    const d = def(core);
    if (d.type === 'array') {
      const item = unwrap(d.element as Schema).core;
      const kind = def(item).type;
      if (kind === 'object') walkObject(item, `${path}[]`, `\`${path}[]\`${suffix}`, '', group);
      else if (kind === 'union') walkValue(item, `${path}[]`, suffix, group);
      return;
    }
    if (d.type !== 'union') return;
    const options = d.options as Schema[];
    if (d === def(checkSchema)) {
      if (checkTypes.length > 0) return; // documented once, for `check` and `checks`
      for (const option of options) {
        walkObject(option, 'check', `\`check\` type \`${discriminant(option)}\``, intro(option), 'checks');
      }
      return;
    }
    if (typeof d.discriminator === 'string') {
      for (const option of options) {
        walkObject(option, path, `\`${path}\` type \`${discriminant(option)}\``, intro(option), group);
      }
      return;
    }
    if (options.every((o) => def(o).type === 'object')) mergeShapes(options, path, suffix, group);
  };

  /** A union of shapes (the steps of `expect`): one table, each key once. */
  const mergeShapes = (options: Schema[], path: string, suffix: string, group: SectionDoc['group']) => {
    const keys = new Map<string, KeyDoc>();
    const forms: string[] = [];
    for (const option of options) {
      const shape = def(option).shape as Record<string, Schema>;
      forms.push(
        Object.keys(shape)
          .map((n) => `\`${n}\``)
          .join(' with '),
      );
      for (const [key, schema] of Object.entries(shape)) {
        // Within one form every key is needed; the forms say which go together.
        if (!keys.has(key)) keys.set(key, { ...keyDoc(key, schema, path, group), default: formDefault(schema) });
      }
    }
    add({
      heading: `\`${path}\`${suffix}`,
      intro: `Each item is one of: ${forms.join('; ')}.`,
      keys: [...keys.values()],
      group,
    });
  };

  walkObject(configSchema, '', 'Top level', '', 'config');
  for (const list of occurrences.values()) {
    for (const one of list) one.doc.alsoIn = list.filter((o) => o !== one).map((o) => o.path || 'the top level');
  }
  return [...sections, ...checkTypes];
}

function formDefault(schema: Schema): string {
  const u = unwrap(schema);
  return u.hasDefault ? formatDefault(u.core, u.defaultValue) : '';
}

function discriminant(option: Schema): string {
  const type = (def(option).shape as Record<string, Schema>).type!;
  return String((def(type).values as unknown[])[0]);
}

function intro(option: Schema): string {
  return descriptionOf(option) ?? '';
}

/** Keys with no description, as `path.key`: the test fails on any. */
export function undocumentedKeys(sections = configurationSections()): string[] {
  return sections.flatMap((s) => s.keys.filter((k) => k.description === '').map((k) => `${s.heading}: ${k.key}`));
}

const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function typeText(key: KeyDoc): string {
  return key.values ? `${key.type} ${key.values.map((v) => `\`${v}\``).join(', ')}` : key.type;
}

function fullDescription(key: KeyDoc): string {
  const also = key.alsoIn.length > 0 ? ` Also set in ${key.alsoIn.map((p) => `\`${p}\``).join(', ')}.` : '';
  return `${key.description}${also}`;
}

const INTRO = `The configuration file is YAML, by default \`/etc/nf-healthd/config.yaml\` (\`-c FILE\` names
another). \`nf-healthd check\` validates it and names file, line, column and key of every error at
once. Unknown keys are errors. Durations are strings with a unit: \`250ms\`, \`2s\`, \`1m\`,
\`1m30s\`, \`1h\`. A file larger than 4 MiB is refused unread (10,000 backends take well under
1 MiB): at start that is exit code 78, at a reload the running config is kept.

The timing keys (\`interval\`, \`fastInterval\`, \`timeout\`, \`rise\`, \`fall\`, \`downInterval\`)
can be set in \`defaults\`, on a service and on a backend: the backend's value wins, then its
service's, then \`defaults\`, then the built-in default. A backend's \`check\` or \`checks\`
replaces its service's; without either, a backend gets \`{type: tcp}\`.`;

/** docs/configuration.md: every key, its type, default, allowed values and description. */
export function configurationReference(): string {
  const out = [
    '# Configuration reference',
    '',
    '<!-- Generated by `npm run docs` from the zod schemas (src/config/reference.ts). Do not edit. -->',
    '',
    INTRO,
    '',
    'Each section is one object of the file, named by its path (`services[]` is an item of the',
    '`services` list). Check types can be used wherever `check` or `checks` is allowed. The',
    'same keys are in [nf-healthd.yaml(5)](man/nf-healthd.yaml.5.md).',
  ];
  let group: SectionDoc['group'] = 'config';
  for (const section of configurationSections()) {
    if (section.group !== group) {
      group = section.group;
      out.push(
        '',
        '## Check types',
        '',
        'Set with `check:` (one) or `checks:` (a list that must all pass), on a service or a backend.',
      );
    }
    out.push('', `${group === 'checks' ? '###' : '##'} ${section.heading}`, '');
    if (section.intro) out.push(section.intro, '');
    out.push('| Key | Type | Default | Description |', '| --- | --- | --- | --- |');
    for (const key of section.keys) {
      out.push(`| \`${key.key}\` | ${cell(typeText(key))} | ${cell(key.default)} | ${cell(fullDescription(key))} |`);
    }
  }
  return `${out.join('\n')}\n`;
}

/** The keys as man page paragraphs, for the generated part of nf-healthd.yaml(5). */
export function manKeyList(): string {
  const out: string[] = [INTRO];
  for (const section of configurationSections()) {
    out.push('', `### ${section.heading.replace(/`/g, '')}`, '');
    if (section.intro) out.push(section.intro, '');
    for (const key of section.keys) {
      const given = key.default === 'required' ? 'required' : key.default && `default ${key.default}`;
      const facts = [typeText(key), given].filter(Boolean).join('; ');
      out.push(`* \`${key.key}\` (${facts}): ${fullDescription(key)}`);
    }
  }
  return out.join('\n');
}

/** Replaces what lies between `<!-- NAME:begin -->` and `<!-- NAME:end -->`. */
export function fillMarkers(text: string, name: string, content: string): string {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`markers ${begin} ... ${end} not found`);
  return `${text.slice(0, from + begin.length)}\n${content}\n${text.slice(to)}`;
}

/** Every generated doc file, relative to the repository root, with the content it must have. */
export function generatedDocs(read: (file: string) => string): { file: string; content: string }[] {
  const man = 'docs/man/nf-healthd.yaml.5.md';
  return [
    { file: 'docs/configuration.md', content: configurationReference() },
    { file: man, content: fillMarkers(read(man), 'reference', manKeyList()) },
  ];
}
