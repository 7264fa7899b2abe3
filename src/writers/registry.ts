import { z } from 'zod';
import type { BackendConfig, ServiceConfig } from '../config/schema.js';
import { conditionWriter } from './condition.js';
import { ipsetWriter } from './ipset.js';
import { nftWriter } from './nft.js';
import type { Writer, WriterDefinition, WriterTarget } from './types.js';

/** Every writer, picked by `writer.type`. Adding one is a file plus a line in each list. */
export const writerSchema = z.discriminatedUnion('type', [
  conditionWriter.schema,
  ipsetWriter.schema,
  nftWriter.schema,
]);
export type WriterConfig = z.infer<typeof writerSchema>;

const definitions: { [K in WriterConfig['type']]: WriterDefinition<z.ZodObject> } = {
  condition: conditionWriter as unknown as WriterDefinition<z.ZodObject>,
  ipset: ipsetWriter as unknown as WriterDefinition<z.ZodObject>,
  nft: nftWriter as unknown as WriterDefinition<z.ZodObject>,
};

export function createWriter(config: WriterConfig): Writer {
  return definitions[config.type].create(config);
}

/** `services`: the whole config's, in order (the nft writer numbers marks by position). */
export function writerTarget(
  config: WriterConfig,
  service: ServiceConfig,
  backend: BackendConfig,
  services: readonly ServiceConfig[],
): WriterTarget {
  return definitions[config.type].target(config, service, backend, services);
}
