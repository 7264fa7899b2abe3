// The client side of test/drain, driven by JSON commands on stdin, one answer line
// per command on stdout:
//   {"op":"open","n":N}       open N connections to HOST:PORT, answer their banners (ids in order)
//   {"op":"echo","ids":[..]}  write a line on each, answer "ok" or the error code (ECONNRESET, ...)
//   {"op":"close","ids":[..]} close them
//   {"op":"burst","n":N}      N short connections one after the other: banners counted
//   {"op":"udp"}              one datagram from the fixed source port SPORT: the answer or null
// Usage: node drain-client.mjs HOST PORT SPORT
import dgram from 'node:dgram';
import net from 'node:net';
import readline from 'node:readline';

const [host, portText, sportText] = process.argv.slice(2);
const port = Number(portText);
const conns = [];
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

function connectOnce() {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    let data = '';
    const timer = setTimeout(() => finish({ error: 'ETIMEDOUT' }), 2000);
    const finish = (r) => {
      clearTimeout(timer);
      socket.removeAllListeners('data');
      resolve({ socket, ...r });
    };
    socket.on('error', (e) => finish({ error: e.code }));
    socket.on('data', (c) => {
      data += c;
      const nl = data.indexOf('\n');
      if (nl >= 0) finish({ banner: data.slice(0, nl) });
    });
  });
}

function echo(socket) {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve('closed');
    let data = '';
    const timer = setTimeout(() => done('timeout'), 3000);
    const done = (r) => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      resolve(r);
    };
    const onData = (c) => {
      data += c;
      if (data.includes('ping\n')) done('ok');
    };
    const onError = (e) => done(e.code);
    const onClose = () => done('closed');
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.write('ping\n');
  });
}

let udp;
function datagram() {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(null), 300);
    const onMessage = (m) => done(m.toString());
    const done = (r) => {
      clearTimeout(timer);
      udp.removeListener('message', onMessage);
      resolve(r);
    };
    udp.on('message', onMessage);
    udp.send('hello', port, host);
  });
}

const commands = {
  async open({ n }) {
    const banners = [];
    for (let i = 0; i < n; i++) {
      const c = await connectOnce();
      c.socket.on('error', () => undefined);
      conns.push(c.socket);
      banners.push(c.banner ?? c.error);
    }
    return { first: conns.length - n, banners };
  },
  async echo({ ids }) {
    return { results: await Promise.all(ids.map((id) => echo(conns[id]))) };
  },
  async close({ ids }) {
    for (const id of ids) conns[id].end();
    return { closed: ids.length };
  },
  async burst({ n }) {
    const answers = {};
    for (let i = 0; i < n; i++) {
      const c = await connectOnce();
      c.socket.destroy();
      const key = c.banner ?? c.error;
      answers[key] = (answers[key] ?? 0) + 1;
    }
    return { answers };
  },
  async udp() {
    if (!udp) {
      udp = dgram.createSocket('udp4');
      await new Promise((r) => udp.bind(Number(sportText), r));
    }
    return { reply: await datagram() };
  },
};

let chain = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  chain = chain.then(() => commands[command.op](command).then(say));
});
