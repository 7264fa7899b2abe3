import { type DestinationStream, type Logger, pino } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };
export type LogFormat = 'auto' | 'json' | 'journal' | 'pretty';

/** sd-daemon(3) priority prefixes, so `journalctl -p warning` shows exactly warnings and errors. */
const JOURNAL_PRIORITY: Record<string, string> = {
  fatal: '<2>',
  error: '<3>',
  warn: '<4>',
  info: '<6>',
  debug: '<7>',
  trace: '<7>',
};

/** `auto`: journal prefixes when stdout is the journal (systemd sets JOURNAL_STREAM), else JSON lines. */
export function resolveLogFormat(format: LogFormat, env: NodeJS.ProcessEnv = process.env): Exclude<LogFormat, 'auto'> {
  if (format !== 'auto') return format;
  return env.JOURNAL_STREAM ? 'journal' : 'json';
}

function journalStream(out: DestinationStream): DestinationStream {
  return {
    write(line: string) {
      // The level is the first key (see formatters.level below): {"level":"warn",...
      const end = line.indexOf('"', 10);
      const level = line.slice(10, end);
      out.write(`${JOURNAL_PRIORITY[level] ?? '<6>'}${line}`);
    },
  };
}

export interface LogOptions {
  level?: string;
  format?: LogFormat;
  /** Where lines go; stdout (synchronously, so nothing is lost at exit) by default. */
  destination?: DestinationStream;
}

export function createLogger(options: LogOptions = {}): Logger {
  const format = resolveLogFormat(options.format ?? 'auto');
  const out = options.destination ?? pino.destination({ dest: 1, sync: true });
  const stream =
    format === 'journal'
      ? journalStream(out)
      : format === 'pretty'
        ? pretty({
            destination: out,
            sync: true,
            ignore: 'pid,hostname,event',
            singleLine: true,
            translateTime: 'SYS:HH:MM:ss.l',
          })
        : out;
  return pino(
    {
      level: options.level ?? 'info',
      base: undefined,
      // journald adds its own timestamp; elsewhere an ISO time is what people grep.
      timestamp: format === 'journal' ? false : pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}
