// One SMTP client connection for the kernel tests' client scripts: connects to HOST:PORT,
// reads the greeting, says QUIT. Resolves with {banner: "<first word after 220>"} or {error}.
import net from 'node:net';

export function greet(host, port, timeoutMs, localAddress) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(port), ...(localAddress ? { localAddress } : {}) });
    let buffer = '';
    const done = (result) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ error: 'TIMEOUT' }), Number(timeoutMs));
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      const line = buffer.slice(0, nl).trim();
      socket.end('QUIT\r\n');
      done(line.startsWith('220 ') ? { banner: line.split(' ')[1] } : { error: `BAD ${line.slice(0, 40)}` });
    });
    socket.on('error', (err) => done({ error: err.code ?? err.message }));
    socket.on('end', () => done({ error: 'CLOSED' }));
  });
}
