import net from 'node:net';
import { z } from 'zod';

/** Names of services and backends: they appear in logs, file names and metric labels. */
export const objectName = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/,
    'expected 1 to 63 letters, digits, "_", "." or "-", starting with a letter or digit',
  );

/**
 * A netfilter condition name, by the kernel's rules (xt_condition: 1 to 30
 * characters, no "/", not "." or ".."), and printable without spaces so that it is
 * safe in a path and on an iptables command line.
 */
export const conditionName = z
  .string()
  .regex(/^[!-~]{1,30}$/, 'a condition name has 1 to 30 printable characters and no spaces')
  .refine((s) => !s.includes('/'), 'a condition name cannot contain "/"')
  .refine((s) => s !== '.' && s !== '..', 'a condition name cannot be "." or ".."');

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export const address = z
  .string()
  .refine((s) => net.isIP(s) !== 0 || HOSTNAME.test(s), 'expected an IPv4 address, an IPv6 address or a host name');
export const ipAddress = z.string().refine((s) => net.isIP(s) !== 0, 'expected an IPv4 or IPv6 address');
export const port = z.number().int().min(1).max(65535);
