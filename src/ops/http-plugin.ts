/**
 * The optional HTTP listener (`http.listen`, loopback when only a port is given):
 * `/metrics` (Prometheus), `/status` (the state as JSON), `/healthz` (200 while the
 * checks and the writer loop make progress: src/health/liveness.ts). GET and HEAD only, except
 * `POST /backends/SERVICE/BACKEND/state` when `http.adminApi` is on (off by default). A reload
 * that changes `http.listen` moves the listener.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ListenAddress } from '../config/operations.js';
import { hostPort } from '../format.js';
import { assessLiveness } from '../health/liveness.js';
import type { Logger } from '../log.js';
import type { Daemon, DaemonObserver, DaemonPlugin } from '../observer.js';
import { handleRequest, MAX_REQUEST_BYTES } from './control.js';
import { metricsFor } from './metrics.js';
import { snapshot } from './snapshot.js';
import { writePeriod } from './state-plugin.js';

function send(res: http.ServerResponse, status: number, type: string, body: string, head: boolean) {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(head ? undefined : body);
}

/** `POST /backends/SERVICE/BACKEND/state` with `{"state": ..., "deadline": ...}`: what `nf-healthd set` does. */
const ADMIN_PATH = /^\/backends\/([^/]+)\/([^/]+)\/state$/;

function adminRequest(
  daemon: Daemon,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  service: string,
  backend: string,
) {
  let body = '';
  let tooLong = false;
  req.setEncoding('utf8');
  req.on('data', (chunk: string) => {
    body += chunk;
    if (body.length > MAX_REQUEST_BYTES) {
      tooLong = true;
      req.destroy();
    }
  });
  req.on('end', () => {
    if (tooLong) return;
    let fields: unknown;
    try {
      fields = JSON.parse(body);
    } catch {
      return send(
        res,
        400,
        'application/json',
        `${JSON.stringify({ ok: false, error: 'usage', message: 'bad request: not a JSON object' })}\n`,
        false,
      );
    }
    const request = {
      op: 'set',
      backend: `${decodeURIComponent(service)}/${decodeURIComponent(backend)}`,
      ...(typeof fields === 'object' ? fields : {}),
    };
    handleRequest(daemon, request).then(
      (answer) => {
        const status = answer.ok
          ? 200
          : answer.error === 'unknown_backend'
            ? 404
            : answer.error === 'usage'
              ? 400
              : 500;
        send(res, status, 'application/json', `${JSON.stringify(answer)}\n`, false);
      },
      () =>
        send(
          res,
          500,
          'application/json',
          `${JSON.stringify({ ok: false, error: 'failed', message: 'the request failed inside the daemon' })}\n`,
          false,
        ),
    );
  });
}

export function createHttpHandler(daemon: Daemon, options: { configPath: string; ready: () => boolean; log: Logger }) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const admin = ADMIN_PATH.exec((req.url ?? '/').split('?')[0]!);
    if (admin && req.method === 'POST' && daemon.config().http?.adminApi)
      return adminRequest(daemon, req, res, admin[1]!, admin[2]!);
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', false);
    }
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/metrics': {
        const { registry } = metricsFor(daemon);
        registry.metrics().then(
          (text) => send(res, 200, registry.contentType, text, head),
          (err: unknown) => {
            options.log.error({ err, event: 'metrics_failed' }, 'collecting metrics failed');
            send(res, 500, 'text/plain; charset=utf-8', 'metrics failed\n', head);
          },
        );
        return;
      }
      case '/status':
        return send(
          res,
          200,
          'application/json',
          `${JSON.stringify(snapshot(daemon, { configPath: options.configPath, writePeriodMs: writePeriod(daemon) }), null, 1)}\n`,
          head,
        );
      case '/healthz': {
        const h = assessLiveness(daemon, options.ready());
        return send(res, h.state === 'ok' ? 200 : 503, 'text/plain; charset=utf-8', `${h.detail}\n`, head);
      }
      default:
        return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /status or /healthz\n', head);
    }
  };
}

export const httpPlugin: DaemonPlugin = ({ daemon, log, configPath }) => {
  // Created on first use (prom-client's process metrics run timers of their own): not at all
  // in a daemon without a listener, hooks or reloads.
  const metrics = () => metricsFor(daemon);
  let ready = false;
  let server: http.Server | undefined;
  let bound: ListenAddress | undefined;
  let stopped = false;
  const handler = createHttpHandler(daemon, { configPath, ready: () => ready, log });

  const close = () =>
    new Promise<void>((resolve) => {
      const s = server;
      server = undefined;
      bound = undefined;
      if (!s) return resolve();
      s.close(() => resolve());
      s.closeAllConnections();
    });

  /** Opens, moves or closes the listener to match the config. Failures are logged, never fatal. */
  let applying: Promise<void> = Promise.resolve();
  const apply = () => {
    applying = applying.then(async () => {
      const want = stopped ? undefined : daemon.config().http?.listen;
      if (want && bound && want.host === bound.host && want.port === bound.port) return;
      await close();
      if (!want) return;
      const s = http.createServer(handler);
      s.headersTimeout = 10_000;
      s.requestTimeout = 10_000;
      s.maxConnections = 64; // a scraper or two and an operator's curl, not a crowd
      try {
        await new Promise<void>((resolve, reject) => {
          s.once('error', reject);
          s.listen(want.port, want.host, () => {
            s.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        log.error(
          { event: 'http_failed', host: want.host, port: want.port, code: e.code },
          `cannot listen on ${want.host}:${want.port} for /metrics: ${e.code ?? e.message}`,
        );
        return;
      }
      s.on('error', (err) => log.error({ err, event: 'http_error' }, 'HTTP listener error'));
      server = s;
      bound = want;
      const addr = s.address() as AddressInfo;
      log.info(
        { event: 'http_listening', host: addr.address, port: addr.port },
        `serving /metrics, /status and /healthz on ${hostPort(addr.address, addr.port)}`,
      );
    });
  };
  apply();

  // Metrics are only counted while a listener is configured: no cost per check otherwise.
  const counting = () => daemon.config().http?.listen !== undefined;
  const observer: DaemonObserver = {
    onCheck: (b, r) => counting() && metrics().observer.onCheck?.(b, r),
    onTransition: (b, from, to) => counting() && metrics().observer.onTransition?.(b, from, to),
    onSync: (b, outcome) => counting() && metrics().observer.onSync?.(b, outcome),
    onReady() {
      ready = true;
    },
    onReloaded(ok, problems) {
      metrics().observer.onReloaded?.(ok, problems);
      if (ok) apply();
    },
    onStopping() {
      stopped = true;
      apply();
    },
  };
  return observer;
};
