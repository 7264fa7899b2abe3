// Builds the instrumented entry: test/instrument/*.ts -> test/instrument/dist/*.js, after
// the main build (`npx tsc -p tsconfig.json`), which entry.js loads from dist/ at run time.
// Transpiled file by file: a tsc program would pull src/ in through the type imports and
// emit a second copy of it. The type check is `tsc -p test/tsconfig.json --noEmit`,
// which covers these files together with src/.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, 'dist');
mkdirSync(out, { recursive: true });
const compilerOptions = { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022, sourceMap: false };
for (const name of readdirSync(here).filter((f) => f.endsWith('.ts'))) {
  const file = path.join(here, name);
  const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions, fileName: file });
  // Only type imports may reach into src/: at run time there is no src/, only dist/ (see entry.ts).
  if (/\bfrom '\.\.\/\.\.\/src\//.test(outputText))
    throw new Error(
      `test/instrument/${name}: imports src/ at run time; use \`import type\` or load dist/ as entry.ts does`,
    );
  writeFileSync(path.join(out, name.replace(/\.ts$/, '.js')), outputText);
}
