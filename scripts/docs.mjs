// npm run docs: writes the docs generated from the zod schemas (docs/configuration.md and
// the key list in docs/man/nf-healthd.yaml.5.md). Runs the built code: `npm run docs`
// compiles first. test/docs.test.ts fails when the committed files differ from this output.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generatedDocs } from '../dist/config/reference.js';

const root = join(import.meta.dirname, '..');
for (const { file, content } of generatedDocs((f) => readFileSync(join(root, f), 'utf8'))) {
  writeFileSync(join(root, file), content);
  process.stdout.write(`wrote ${file}\n`);
}
