// Opens COUNT connections one after another to HOST:PORT from inside the client's
// namespace, reads each greeting and says QUIT. Prints JSON:
//   {"answers": {"<first word after 220>": n, ...}, "failures": ["ECONNREFUSED", ...]}
// COUNT `for:MS` keeps connecting for MS milliseconds and adds "timeline": [[ms, banner
// or error], ...]. SOURCES (optional, comma-separated local addresses): connection i
// binds to source i mod n, and "bySource" says which banner each source got last.
import { greet as greetOnce } from './smtp-greet.mjs';

const [host, port, count, timeoutMs, sourceList] = process.argv.slice(2);
const sources = sourceList ? sourceList.split(',') : [];
const greet = (localAddress) => greetOnce(host, port, timeoutMs, localAddress);

const answers = {};
const failures = [];
const bySource = {};
const timeline = [];
const forMs = count.startsWith('for:') ? Number(count.slice(4)) : undefined;
const start = performance.now();
for (let i = 0; forMs === undefined ? i < Number(count) : performance.now() - start < forMs; i++) {
  const source = sources.length > 0 ? sources[i % sources.length] : undefined;
  const at = Math.round(performance.now() - start);
  const r = await greet(source);
  if (r.banner) answers[r.banner] = (answers[r.banner] ?? 0) + 1;
  else failures.push(r.error);
  if (source) bySource[source] = r.banner ?? r.error;
  if (forMs !== undefined) timeline.push([at, r.banner ?? r.error]);
}
const extra = { ...(sources.length > 0 ? { bySource } : {}), ...(forMs !== undefined ? { timeline } : {}) };
process.stdout.write(`${JSON.stringify({ answers, failures, ...extra })}\n`);
