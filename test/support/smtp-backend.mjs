// An SMTP banner server for the kernel tests, run inside a backend's namespace:
//   node smtp-backend.mjs HOST PORT BANNER
// Prints "listening" once it accepts connections. SIGUSR1 stops accepting new
// connections but keeps the open ones talking (a backend that fails its checks
// while its established connections live on); SIGUSR2 accepts again (prints
// "listening" again; SIGUSR1 prints "closed"); SIGTERM stops.
import net from 'node:net';

const [host, port, banner] = process.argv.slice(2);
const server = net.createServer((socket) => {
  socket.on('error', () => undefined);
  socket.setEncoding('latin1');
  socket.write(`220 ${banner}\r\n`);
  let buffer = '';
  socket.on('data', (chunk) => {
    buffer = (buffer + chunk).slice(-4096);
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const cmd = buffer.slice(0, nl).trim().toUpperCase();
      buffer = buffer.slice(nl + 1);
      if (cmd.startsWith('EHLO') || cmd.startsWith('HELO')) socket.write(`250 ${banner.split(' ')[0]}\r\n`);
      else if (cmd === 'QUIT') socket.end('221 bye\r\n');
      else socket.write('502 not implemented\r\n');
    }
  });
});
server.listen(Number(port), host, () => process.stdout.write('listening\n'));
process.on('SIGUSR1', () => {
  server.close();
  process.stdout.write('closed\n');
});
process.on('SIGUSR2', () => {
  if (!server.listening) server.listen(Number(port), host, () => process.stdout.write('listening\n'));
});
process.on('SIGTERM', () => process.exit(0));
// Alive while not accepting (after SIGUSR1), until a signal ends it.
setInterval(() => undefined, 2 ** 30);
