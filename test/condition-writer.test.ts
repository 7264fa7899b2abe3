import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createConditionWriter } from '../src/kernel/writers/condition.js';
import { tempDir } from './support/daemon.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function folder() {
  const t = tempDir('nfh-cond-');
  cleanups.push(t.cleanup);
  return t.dir;
}

const target = (dir: string, key: string) => ({ key, label: path.join(dir, key) });

describe('condition writer', () => {
  it('writes "0\\n" for up and "1\\n" for down with upValue 0 (the recipe), and reads them back', async () => {
    const dir = folder();
    const w = createConditionWriter({ type: 'condition', dir, upValue: 0 });
    expect(
      await w.write([
        { target: target(dir, 'mail1up'), up: true },
        { target: target(dir, 'mail2up'), up: false },
      ]),
    ).toEqual(new Map());
    expect(readFileSync(path.join(dir, 'mail1up'), 'latin1')).toBe('0\n');
    expect(readFileSync(path.join(dir, 'mail2up'), 'latin1')).toBe('1\n');
    const read = await w.read([target(dir, 'mail1up'), target(dir, 'mail2up')]);
    expect(read.get('mail1up')).toEqual({ up: true, raw: '0\n' });
    expect(read.get('mail2up')).toEqual({ up: false, raw: '1\n' });
  });

  it('writes "1\\n" for up with upValue 1', async () => {
    const dir = folder();
    const w = createConditionWriter({ type: 'condition', dir, upValue: 1 });
    await w.write([{ target: target(dir, 'web1'), up: true }]);
    expect(readFileSync(path.join(dir, 'web1'), 'latin1')).toBe('1\n');
  });

  it('does not create missing files when create is off (the /proc behaviour) and explains ENOENT', async () => {
    const dir = folder();
    const w = createConditionWriter({ type: 'condition', dir, upValue: 0, create: false });
    const failed = await w.write([{ target: target(dir, 'mail1up'), up: true }]);
    const err = failed.get('mail1up')!;
    expect(err.code).toBe('ENOENT');
    expect(existsSync(path.join(dir, 'mail1up'))).toBe(false);
    expect(w.hint(err, target(dir, 'mail1up'))).toMatch(/no loaded rule names condition "mail1up" yet/);
    // An existing file is written in place, without truncation semantics mattering: 2 bytes.
    writeFileSync(path.join(dir, 'mail1up'), '1\n');
    expect(await w.write([{ target: target(dir, 'mail1up'), up: true }])).toEqual(new Map());
    expect(readFileSync(path.join(dir, 'mail1up'), 'latin1')).toBe('0\n');
  });

  it('defaults to not creating under /proc and creating elsewhere', async () => {
    const dir = folder();
    await createConditionWriter({ type: 'condition', dir, upValue: 0 }).write([{ target: target(dir, 'x'), up: true }]);
    expect(existsSync(path.join(dir, 'x'))).toBe(true);
    const proc = createConditionWriter({ type: 'condition', dir: '/proc/net/nf_condition', upValue: 0 });
    const failed = await proc.write([{ target: { key: 'nfh-test-none', label: '' }, up: true }]);
    expect(failed.get('nfh-test-none')?.code).toBe('ENOENT');
  });

  it('refuses a name that would escape the folder even if it got past the config', async () => {
    const dir = folder();
    const w = createConditionWriter({ type: 'condition', dir, upValue: 0 });
    const failed = await w.write([{ target: { key: '../escape', label: '' }, up: true }]);
    expect(failed.get('../escape')?.message).toMatch(/refusing condition name/);
    expect(existsSync(path.join(dir, '..', 'escape'))).toBe(false);
  });

  it('on EACCES under /proc names the module options for this process (the real one: test/condition-vm)', () => {
    // The errno object stands in for the kernel's refusal: this kernel has no xt_condition.
    const denied = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    const proc = createConditionWriter({ type: 'condition', dir: '/proc/net/nf_condition', upValue: 0 });
    const hint = proc.hint(denied, { key: 'mail1up', label: '/proc/net/nf_condition/mail1up' });
    const gid = process.getgid!();
    expect(hint).toContain(`(uid ${process.getuid!()}, gid ${gid}) may not write it`);
    expect(hint).toContain(
      `"options xt_condition condition_gid_perms=${gid} condition_list_perms=0664" in /etc/modprobe.d/`,
    );
    const dir = folder();
    const plain = createConditionWriter({ type: 'condition', dir, upValue: 0 });
    expect(plain.hint(denied, target(dir, 'mail1up'))).toBe(
      `this process (uid ${process.getuid!()}, gid ${gid}) may not write in ${dir}`,
    );
  });
});
