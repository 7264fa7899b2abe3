import net from 'node:net';

/**
 * A tiny SMTP greeter for the demo and the tests: 220 banner, answers EHLO/HELO and
 * QUIT. Stoppable (listener and every open connection) and restartable on the same port.
 */
export interface SmtpServer {
  readonly host: string;
  port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly connections: number;
}

export function createSmtpServer(options: { host?: string; port?: number; banner?: string } = {}): SmtpServer {
  const host = options.host ?? '127.0.0.1';
  const banner = options.banner ?? 'nf-healthd-demo ESMTP';
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  let handled = 0;
  const api: SmtpServer = {
    host,
    port: options.port ?? 0,
    get connections() {
      return handled;
    },
    start() {
      server = net.createServer((socket) => {
        handled++;
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => undefined);
        socket.setEncoding('latin1');
        socket.write(`220 ${banner}\r\n`);
        let buffer = '';
        socket.on('data', (chunk: string) => {
          buffer = (buffer + chunk).slice(-4096);
          let nl;
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const cmd = buffer.slice(0, nl).trim().toUpperCase();
            buffer = buffer.slice(nl + 1);
            if (cmd.startsWith('EHLO'))
              socket.write(`250-${banner.split(' ')[0]}\r\n250-PIPELINING\r\n250 8BITMIME\r\n`);
            else if (cmd.startsWith('HELO')) socket.write(`250 ${banner.split(' ')[0]}\r\n`);
            else if (cmd === 'QUIT') socket.end('221 bye\r\n');
            else socket.write('502 not implemented\r\n');
          }
        });
      });
      const srv = server;
      return new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(api.port, host, () => {
          api.port = (srv.address() as net.AddressInfo).port;
          resolve();
        });
      });
    },
    stop() {
      const srv = server;
      server = undefined;
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => (srv ? srv.close(() => resolve()) : resolve()));
    },
  };
  return api;
}
