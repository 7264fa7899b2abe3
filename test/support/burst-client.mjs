// Opens connections to HOST:PORT from inside the client's namespace without waiting for
// one to finish before the next (as many clients would), reads each SMTP greeting:
//   node burst-client.mjs HOST PORT COUNT TIMEOUT_MS            COUNT connections at once
//   node burst-client.mjs HOST PORT rate:PER_S:FOR_MS TIMEOUT_MS  PER_S a second for FOR_MS
// Prints JSON: {"startedAt": epoch ms, "answers": {"<banner word>": n}, "failures": {"<error>": n},
// "timeline": [[ms since start, banner or error], ...]} (timeline in start order).
import { greet as greetOnce } from './smtp-greet.mjs';

const [host, port, count, timeoutMs] = process.argv.slice(2);
/** `220 <banner word>` or the error. */
const greet = () => greetOnce(host, port, timeoutMs).then((r) => (r.banner ? `220 ${r.banner}` : r.error));

const startedAt = Date.now();
const start = performance.now();
const pending = [];
if (count.startsWith('rate:')) {
  const [perSecond, forMs] = count.slice(5).split(':').map(Number);
  const gap = 1000 / perSecond;
  for (let i = 0; i * gap < forMs; i++) {
    const due = start + i * gap;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const at = Math.round(performance.now() - start);
    pending.push(greet().then((r) => [at, r]));
  }
} else {
  for (let i = 0; i < Number(count); i++) pending.push(greet().then((r) => [0, r]));
}
const timeline = await Promise.all(pending);
const answers = {};
const failures = {};
for (const [, r] of timeline) {
  if (r.startsWith('220 ')) answers[r.slice(4)] = (answers[r.slice(4)] ?? 0) + 1;
  else failures[r] = (failures[r] ?? 0) + 1;
}
process.stdout.write(`${JSON.stringify({ startedAt, answers, failures, timeline })}\n`);
