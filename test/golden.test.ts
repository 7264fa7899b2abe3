import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RULES_FORMATS, renderRules } from '../src/kernel/rules/command.js';
import { loadPlan } from '../src/plan/load.js';

// Byte-for-byte what version 0.1 printed and wrote for these configs (recorded before the
// Plan existed): `rules` in every format, and the kernel key and label of every backend.
// A change here changes what operators load into their kernels: update the golden files
// only on purpose, and say so in the change.
const fixtures = {
  example: 'config/example.yaml',
  weighted: 'test/golden/weighted.yaml',
  'nft-v6': 'test/golden/nft-v6.yaml',
  ipset: 'test/golden/ipset.yaml',
};

describe('golden: rules and kernel keys are what they were', () => {
  for (const [name, file] of Object.entries(fixtures)) {
    it(`${name}: every rules format and every writer target`, () => {
      const golden = JSON.parse(readFileSync(`test/golden/${name}.golden.json`, 'utf8')) as Record<string, string>;
      const plan = loadPlan(file);
      for (const format of RULES_FORMATS) {
        let text: string;
        try {
          text = renderRules(plan, format);
        } catch (err) {
          text = `ERROR ${(err as Error).message}`;
        }
        expect(text, `${name} --format ${format}`).toBe(golden[format]);
      }
      const targets = plan.backends.map((b) => `${b.id} ${b.target.key} | ${b.target.label}`).join('\n');
      expect(targets).toBe(golden.targets);
    });
  }
});
