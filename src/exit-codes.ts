/**
 * Every exit code of every command, in one place (sysexits.h where one fits):
 * 0   ok: done, or every backend up (`probe`, `status`)
 * 1   the daemon failed while stopping
 * 2   some backend is down (`probe`, `status`)
 * 3   no daemon is running, or its state file is stale (`status`, `set`)
 * 64  usage error (EX_USAGE): unknown command, option or rules format, a bad `set` request
 * 65  data error (EX_DATAERR): `set` names a backend the running config does not have
 * 77  permission denied (EX_NOPERM): `set` may not use the control socket
 * 78  configuration error (EX_CONFIG): the config is invalid, or `rules` cannot express it
 */
export const EXIT = {
  ok: 0,
  failure: 1,
  down: 2,
  notRunning: 3,
  usage: 64,
  unknown: 65,
  noPermission: 77,
  config: 78,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
