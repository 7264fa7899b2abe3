import type { Readable } from 'node:stream';

/** Calls `onLine` for every complete line the stream delivers. */
export function eachLine(stream: Readable, onLine: (line: string) => void): void {
  let pending = '';
  stream.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      onLine(line);
    }
  });
}

/**
 * A list that grows as a child process talks, and waits on it: `waitFor` resolves
 * with the first item (from index `from`) that matches, rejects after `ms` or when
 * `gone()` says the source has ended. Call `changed()` after pushing.
 */
export function waitableList<T>(describe: (items: T[]) => string, gone: () => string | undefined = () => undefined) {
  const items: T[] = [];
  const waiters = new Set<() => void>();
  return {
    items,
    changed: () => {
      for (const w of waiters) w();
    },
    waitFor(match: (item: T) => boolean, ms = 10_000, from = 0): Promise<T> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = items.slice(from).find(match);
          const ended = found ? undefined : gone();
          if (found) resolve(found);
          else if (ended) reject(new Error(`${ended} before a match came; ${describe(items)}`));
          else return;
          done();
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no match within ${ms}ms; ${describe(items)}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}
