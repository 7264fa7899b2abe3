import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
  /** Valid from ten days from now. */
  notYetValid: CertFiles;
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
  const notYetValid = await leaf('future', LOCAL_NAMES, new Date(now + 10 * DAY), new Date(now + 40 * DAY));
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
    notYetValid,
    wrongName,
    selfSigned,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** DER, just enough for the certificates below (node:crypto signs; no CLI call per certificate). */
function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const length =
    n < 0x80
      ? Buffer.from([n])
      : Buffer.concat([Buffer.from([0x80 | Math.ceil(n.toString(16).length / 2)]), bigEndian(n)]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}
function bigEndian(n: number): Buffer {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
}
const seq = (...parts: Buffer[]) => tlv(0x30, ...parts);
function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const bytes = [40 * a! + b!];
  for (const n of rest) {
    const groups = [n & 0x7f];
    for (let v = n >>> 7; v > 0; v >>>= 7) groups.unshift((v & 0x7f) | 0x80);
    bytes.push(...groups);
  }
  return tlv(0x06, Buffer.from(bytes));
}
const utcTime = (d: Date) => tlv(0x17, Buffer.from(`${stamp(d).slice(2)}`, 'latin1'));
const cnName = (cn: string) => seq(tlv(0x31, seq(oid('2.5.4.3'), tlv(0x0c, Buffer.from(cn, 'utf8')))));
const extension = (id: string, value: Buffer) => seq(oid(id), tlv(0x01, Buffer.from([0xff])), tlv(0x04, value));
const ECDSA_SHA256 = seq(oid('1.2.840.10045.4.3.2'));

/** One X.509 v3 certificate as PEM: `ca` ones may sign, the others name localhost and 127.0.0.1. */
function certificate(o: {
  serial: number;
  issuer: string;
  subject: string;
  ca: boolean;
  key: KeyObject;
  signer: KeyObject;
}): string {
  const DAY = 86_400_000;
  const extensions = o.ca
    ? [
        extension('2.5.29.19', seq(tlv(0x01, Buffer.from([0xff])))), // basicConstraints CA:TRUE
        extension('2.5.29.15', tlv(0x03, Buffer.from([0x02, 0x04]))), // keyUsage keyCertSign
      ]
    : [
        extension('2.5.29.19', seq()),
        extension(
          '2.5.29.17', // subjectAltName: DNS:localhost, IP:127.0.0.1
          seq(tlv(0x82, Buffer.from('localhost', 'latin1')), tlv(0x87, Buffer.from([127, 0, 0, 1]))),
        ),
      ];
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, bigEndian(o.serial)),
    ECDSA_SHA256,
    cnName(o.issuer),
    seq(utcTime(new Date(Date.now() - DAY)), utcTime(new Date(Date.now() + 30 * DAY))),
    cnName(o.subject),
    createPublicKey(o.key).export({ type: 'spki', format: 'der' }),
    tlv(0xa3, seq(...extensions)),
  );
  const der = seq(tbs, ECDSA_SHA256, tlv(0x03, Buffer.from([0]), sign('sha256', tbs, o.signer)));
  return `-----BEGIN CERTIFICATE-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END CERTIFICATE-----\n`;
}

/**
 * A leaf for localhost/127.0.0.1 under `depth` intermediate CAs below the PKI's CA:
 * `cert` holds the leaf and every intermediate, as a server sends them. One key
 * signs them all (the test is about the chain's length, not its keys).
 */
export async function makeLongChain(pki: TestPki, depth: number): Promise<CertFiles> {
  const dir = await mkdtemp(path.join(pki.dir, 'chain-'));
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const caKey = createPrivateKey(await readFile(path.join(pki.dir, 'ca.key')));
  const pems: string[] = [];
  let issuer = 'nf-healthd test CA';
  let signer = caKey;
  for (let i = depth; i >= 0; i--) {
    const subject = i === 0 ? 'localhost' : `intermediate ${i}`;
    pems.unshift(certificate({ serial: 5000 + i, issuer, subject, ca: i > 0, key, signer }));
    issuer = subject;
    signer = key;
  }
  const files = { key: path.join(dir, 'key.pem'), cert: path.join(dir, 'fullchain.pem') };
  await writeFile(files.key, key.export({ type: 'pkcs8', format: 'pem' }));
  await writeFile(files.cert, pems.join(''));
  return files;
}

/** A leaf for localhost/127.0.0.1 from the PKI's CA, padded with an extension to about `bytes` of DER. */
export async function makeHugeCert(pki: TestPki, bytes: number): Promise<CertFiles> {
  const dir = await mkdtemp(path.join(pki.dir, 'huge-'));
  const at = (name: string) => path.join(dir, name);
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', at('key.pem')]);
  await run('openssl', ['req', '-new', '-key', at('key.pem'), '-subj', '/CN=localhost', '-out', at('req.csr')]);
  // A private-arc OID holding a long string: too long for the command line, fine in a file.
  await writeFile(
    at('leaf.ext'),
    `basicConstraints = CA:FALSE\nsubjectAltName = ${LOCAL_NAMES}\n1.3.6.1.4.1.55555.1 = ASN1:UTF8String:${'x'.repeat(bytes)}\n`,
  );
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    at('req.csr'),
    '-CA',
    pki.caFile,
    '-CAkey',
    path.join(pki.dir, 'ca.key'),
    '-set_serial',
    '4242',
    '-days',
    '30',
    '-extfile',
    at('leaf.ext'),
    '-out',
    at('cert.pem'),
  ]);
  return { key: at('key.pem'), cert: at('cert.pem') };
}
