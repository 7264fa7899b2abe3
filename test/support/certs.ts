import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A key and certificate pair as PEM file paths. */
export interface CertFiles {
  key: string;
  cert: string;
}

/**
 * A throw-away PKI made with the openssl CLI in a temp folder: a CA and leaf
 * certificates for localhost/127.0.0.1 (good, expiring soon, expired, wrong name) plus
 * a self-signed one. `openssl ca` is used because it can backdate a certificate.
 */
export interface TestPki {
  dir: string;
  caFile: string;
  good: CertFiles;
  soon: CertFiles;
  expired: CertFiles;
  wrongName: CertFiles;
  selfSigned: CertFiles;
  remove(): Promise<void>;
}

const LOCAL_NAMES = 'DNS:localhost,IP:127.0.0.1';

/** openssl's date format: YYYYMMDDHHMMSSZ. */
function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:T]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

export async function makePki(): Promise<TestPki> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `nfh-pki-${process.pid}-`));
  const at = (name: string) => path.join(dir, name);
  await mkdir(at('newcerts'));
  await writeFile(at('index.txt'), '');
  await writeFile(at('serial'), '1000\n');
  await writeFile(
    at('ca.cnf'),
    [
      '[ca]',
      'default_ca = testca',
      '[testca]',
      `database = ${at('index.txt')}`,
      `new_certs_dir = ${at('newcerts')}`,
      `serial = ${at('serial')}`,
      `certificate = ${at('ca.pem')}`,
      `private_key = ${at('ca.key')}`,
      'default_md = sha256',
      'policy = anything',
      'unique_subject = no',
      '[anything]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...key,
    '-keyout',
    at('ca.key'),
    '-out',
    at('ca.pem'),
    '-subj',
    '/CN=nf-healthd test CA',
    '-days',
    '30',
  ]);

  const DAY = 86_400_000;
  const now = Date.now();
  const leaf = async (name: string, names: string, from: Date, to: Date): Promise<CertFiles> => {
    const files = { key: at(`${name}.key`), cert: at(`${name}.pem`) };
    await writeFile(at(`${name}.ext`), `basicConstraints = CA:FALSE\nsubjectAltName = ${names}\n`);
    await run('openssl', [
      'req',
      '-new',
      ...key,
      '-keyout',
      files.key,
      '-out',
      at(`${name}.csr`),
      '-subj',
      `/CN=${name}`,
    ]);
    await run('openssl', [
      'ca',
      '-batch',
      '-notext',
      '-config',
      at('ca.cnf'),
      '-in',
      at(`${name}.csr`),
      '-out',
      files.cert,
      '-startdate',
      stamp(from),
      '-enddate',
      stamp(to),
      '-extfile',
      at(`${name}.ext`),
    ]);
    return files;
  };
  const good = await leaf('good', LOCAL_NAMES, new Date(now - DAY), new Date(now + 365 * DAY));
  const soon = await leaf('soon', LOCAL_NAMES, new Date(now - DAY), new Date(now + 5 * DAY));
  const expired = await leaf('expired', LOCAL_NAMES, new Date(now - 30 * DAY), new Date(now - 2 * DAY));
  const wrongName = await leaf('wrongname', 'DNS:wrong.example', new Date(now - DAY), new Date(now + 365 * DAY));
  const selfSigned = { key: at('self.key'), cert: at('self.pem') };
  await run('openssl', [
    'req',
    '-x509',
    ...key,
    '-keyout',
    selfSigned.key,
    '-out',
    selfSigned.cert,
    '-subj',
    '/CN=localhost',
    '-days',
    '30',
    '-addext',
    `subjectAltName=${LOCAL_NAMES}`,
  ]);
  return {
    dir,
    caFile: at('ca.pem'),
    good,
    soon,
    expired,
    wrongName,
    selfSigned,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
