// A DNS client for the kernel test, run inside the client namespace:
//   node dns-client.mjs SERVER PORT NAME FIRST_LOCAL_PORT COUNT TIMEOUT_MS
// Sends COUNT A queries one after another, query i from local port FIRST_LOCAL_PORT+i (so
// every query is a new conntrack flow), and prints {"answers":{"ADDRESS":n},"failures":[...]}.
// It uses the built DNS wire code (dist/); dnsmasq on the other end judges the queries.
import dgram from 'node:dgram';
import { describeAnswer, encodeQuery, encodeQuestion, parseReply } from '../../dist/probes/dns-wire.js';

const [server, port, name, firstPort, count, timeoutMs] = process.argv.slice(2);
const question = encodeQuestion(name, 'A');

function ask(localPort, id) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const done = (result) => {
      clearTimeout(timer);
      socket.close();
      resolve(result);
    };
    const timer = setTimeout(() => done({ failure: 'timeout' }), Number(timeoutMs));
    socket.on('error', (err) => done({ failure: err.code ?? err.message }));
    socket.on('message', (packet) => {
      try {
        const reply = parseReply(packet, id, question);
        const first = reply.answers.map(describeAnswer).find((a) => a !== undefined);
        done(first ? { answer: first } : { failure: `${reply.rcode} without an A answer` });
      } catch (err) {
        done({ failure: err.message });
      }
    });
    socket.bind(localPort, () => socket.connect(Number(port), server, () => socket.send(encodeQuery(id, question))));
  });
}

const answers = {};
const failures = [];
for (let i = 0; i < Number(count); i++) {
  const result = await ask(Number(firstPort) + i, (i * 7919 + 1) & 0xffff);
  if (result.answer) answers[result.answer] = (answers[result.answer] ?? 0) + 1;
  else failures.push(result.failure);
}
process.stdout.write(`${JSON.stringify({ answers, failures })}\n`);
