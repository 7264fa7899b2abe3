import { z } from 'zod';
import { duration } from './duration.js';

/**
 * The `writer:` key: which kernel mechanism the daemon drives, one schema per kind. The
 * writers themselves (src/kernel/writers) take these types; the names they derive live in
 * src/plan/kernel-names.ts.
 */

export const IPSET_DEFAULT_PREFIX = 'nfh-';
export const NFT_DEFAULTS = { table: 'nfh', family: 'inet', set: 'up' } as const;
export type NftFamily = 'inet' | 'ip' | 'ip6';

/** What nft's scanner accepts unquoted as a table, chain or set name (we stay within letters, digits, "_", ".", "-"). */
export const nftIdentifierPattern = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

/** A binary: a bare name looked up in PATH, or an absolute path. */
export const binaryPath = z
  .string()
  .regex(/^(\/[A-Za-z0-9_./+-]+|[A-Za-z0-9_.+-]+)$/, 'expected a program name or an absolute path');

export const conditionWriterSchema = z
  .strictObject({
    type: z.literal('condition'),
    dir: z
      .string()
      .startsWith('/', 'expected an absolute path')
      .default('/proc/net/nf_condition')
      .describe('The folder of the condition files (one per backend, named by its `condition`).'),
    /** The recipe's rules say `! --condition`, so 0 means up there. */
    upValue: z
      .union([z.literal(0), z.literal(1)])
      .default(0)
      .describe("The value that means up: `0` for rules that test `! --condition`, as the recipe's do."),
    /** Create missing files: right for a plain folder, wrong under /proc where the kernel owns them. Default: not under /proc. */
    create: z
      .boolean()
      .optional()
      .describe(
        'Create missing files; default: yes, except under `/proc`, where the kernel makes them when a rule names them.',
      ),
  })
  .describe('xt_condition (xtables-addons): writes `0`/`1` to one file per backend.');
export type ConditionWriterConfig = z.infer<typeof conditionWriterSchema>;

export const ipsetWriterSchema = z
  .strictObject({
    type: z.literal('ipset'),
    /** Set of backend B is PREFIX + B (shortened with a hash past 31 characters), as `nf-healthd rules` names it. */
    setPrefix: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,16}$/, 'expected 1 to 16 letters, digits, "_", ".", ":" or "-"')
      .default(IPSET_DEFAULT_PREFIX)
      .describe(
        "Backend B's set is PREFIX + B (shortened to a stable name ending in a hash past 31 characters), as `nf-healthd rules` names it.",
      ),
    ipsetPath: binaryPath
      .default('ipset')
      .describe('The ipset program: a name looked up in PATH, or an absolute path.'),
    /** How long one ipset command may take (default 5s). */
    commandTimeout: duration
      .optional()
      .describe('How long one ipset command may take before it is killed; default 5s.'),
  })
  .describe('ipset: a backend is up while its `hash:ip` set holds the service VIP.');
export type IpsetWriterConfig = z.infer<typeof ipsetWriterSchema>;

const nftIdentifier = z
  .string()
  .regex(nftIdentifierPattern, 'expected an nft name: a letter or "_", then letters, digits, "_", "." or "-"');

export const nftWriterSchema = z
  .strictObject({
    type: z.literal('nft'),
    table: nftIdentifier.default(NFT_DEFAULTS.table).describe('The nft table the rules and the set live in.'),
    family: z
      .enum(['inet', 'ip', 'ip6'])
      .default(NFT_DEFAULTS.family)
      .describe("The table's family (`inet` serves IPv4 and IPv6)."),
    /** The set of live marks, as `nf-healthd rules --format nft` declares it. */
    set: nftIdentifier
      .default(NFT_DEFAULTS.set)
      .describe("The set of live backends' marks, as `nf-healthd rules --format nft` declares it."),
    nftPath: binaryPath.default('nft').describe('The nft program: a name looked up in PATH, or an absolute path.'),
    /** How long one nft command may take (default 5s). */
    commandTimeout: duration.optional().describe('How long one nft command may take before it is killed; default 5s.'),
  })
  .describe('nftables: a backend is up while its mark is in one set.');
export type NftWriterConfig = z.infer<typeof nftWriterSchema>;

/** Every writer, picked by `writer.type`. */
export const writerSchema = z.discriminatedUnion('type', [conditionWriterSchema, ipsetWriterSchema, nftWriterSchema]);
export type WriterConfig = z.infer<typeof writerSchema>;
