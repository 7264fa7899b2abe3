// npm run docs: writes the docs generated from the code: docs/configuration.md and the key
// list in docs/man/nf-healthd.yaml.5.md (from the zod schemas), and the log event table in
// docs/operating.md (from src/events.ts). Runs the built code: `npm run docs` compiles
// first. test/docs.test.ts and test/events.test.ts fail when the committed files differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fillMarkers, generatedDocs } from '../dist/config/reference.js';
import { eventCatalogMarkdown } from '../dist/events.js';

const root = join(import.meta.dirname, '..');
const read = (file) => readFileSync(join(root, file), 'utf8');
const operating = 'docs/operating.md';
const files = [
  ...generatedDocs(read),
  { file: operating, content: fillMarkers(read(operating), 'events', eventCatalogMarkdown()) },
];
for (const { file, content } of files) {
  writeFileSync(join(root, file), content);
  process.stdout.write(`wrote ${file}\n`);
}
