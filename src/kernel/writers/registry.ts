import type { WriterConfig } from '../../config/writers.js';
import { createConditionWriter } from './condition.js';
import { createIpsetWriter } from './ipset.js';
import { createNftWriter } from './nft.js';
import type { Writer } from './types.js';

/** The writer for `writer.type`. Adding one: its schema in src/config/writers.ts, its key in plan/kernel-names.ts, a line here. */
export function createWriter(config: WriterConfig): Writer {
  switch (config.type) {
    case 'condition':
      return createConditionWriter(config);
    case 'ipset':
      return createIpsetWriter(config);
    case 'nft':
      return createNftWriter(config);
  }
}
