import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { configurationSections } from '../src/config/reference.js';
import { tempDir } from './support/daemon.js';

/*
 * The man pages nf-healthd(8) and nf-healthd.yaml(5): built from docs/man/*.md by
 * scripts/man.mjs (what `npm run man` runs) and rendered by the real man-db (`man -l`).
 */

const ROOT = path.join(import.meta.dirname, '..');
const run = promisify(execFile);

describe('man pages', () => {
  const out = tempDir('nfh-man-');
  afterAll(() => out.cleanup());

  async function render(page: string): Promise<string> {
    const { stdout, stderr } = await run('man', ['-l', path.join(out.dir, page)], {
      env: { ...process.env, MANWIDTH: '100', MAN_KEEP_FORMATTING: '', LC_ALL: 'C.UTF-8', MANPAGER: 'cat' },
    });
    expect(stderr, `man -l ${page} warned`).toBe('');
    return stdout;
  }

  it('build with `npm run man` and render with man -l', { timeout: 60_000 }, async () => {
    await run(process.execPath, [path.join(ROOT, 'scripts/man.mjs'), out.dir]);
    expect(readdirSync(out.dir).sort()).toEqual(['nf-healthd.8', 'nf-healthd.yaml.5']);

    const eight = await render('nf-healthd.8');
    expect(eight).toMatch(/^NF-HEALTHD\(8\)/);
    for (const section of [
      'NAME',
      'SYNOPSIS',
      'DESCRIPTION',
      'COMMANDS',
      'OPTIONS',
      'SIGNALS',
      'EXIT STATUS',
      'FILES',
      'ENVIRONMENT',
      'SEE ALSO',
    ]) {
      expect(eight).toMatch(new RegExp(`^${section}$`, 'm'));
    }
    for (const word of ['SIGHUP', 'SIGUSR1', '/run/nf-healthd/state.json', 'NOTIFY_SOCKET', '--format F']) {
      expect(eight).toContain(word);
    }
    for (const code of ['0', '1', '2', '3', '64', '78']) expect(eight).toMatch(new RegExp(`^ +• ${code}:`, 'm'));

    const five = await render('nf-healthd.yaml.5');
    expect(five).toMatch(/^NF-HEALTHD\.YAML\(5\)/);
    for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'EXAMPLE', 'KEYS', 'HOOK ENVIRONMENT', 'SEE ALSO']) {
      expect(five).toMatch(new RegExp(`^${section}$`, 'm'));
    }
    // Every key of every section is in the page (the generated part survived the conversion).
    const text = five.replace(/‐\n\s*/g, '').replace(/\s+/g, ' ');
    for (const section of configurationSections()) {
      for (const key of section.keys) expect(text).toContain(`• ${key.key} (${key.type.replace(/`/g, '')}`);
    }
    expect(text).not.toContain('<!--');
    expect(text).not.toMatch(/&\w+;|&#\d+;/);
  });
});
