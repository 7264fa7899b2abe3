// npm run man [OUTDIR]: renders the man pages written as Markdown in docs/man/ to roff
// with marked-man, into dist/man/ by default (nf-healthd.8, nf-healthd.yaml.5: the paths
// packaging installs from). HTML comments (the generator's markers) are dropped first:
// marked-man would print them as text.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const out = process.argv[2] ?? join(root, 'dist', 'man');
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const markedMan = createRequire(import.meta.url)
  .resolve('marked-man/package.json')
  .replace(/package\.json$/, 'bin/marked-man.js');

mkdirSync(out, { recursive: true });
for (const name of readdirSync(join(root, 'docs', 'man')).filter((f) => /\.\d\.md$/.test(f))) {
  const markdown = readFileSync(join(root, 'docs', 'man', name), 'utf8').replace(/^<!--.*-->\n/gm, '');
  const roff = execFileSync(
    process.execPath,
    [markedMan, '--no-breaks', '--version', version, '--manual', 'nf-healthd'],
    { input: markdown, maxBuffer: 16 * 1024 * 1024 },
  );
  const target = join(out, name.replace(/\.md$/, ''));
  // marked escapes quotes in code spans as HTML entities, which marked-man leaves as they are.
  writeFileSync(target, roff.toString().replaceAll('&quot;', '"').replaceAll('&#39;', "'"));
  process.stdout.write(`wrote ${target}\n`);
}
