/** The operating parts (issue 6), in the order they are wired around the daemon. */
import type { DaemonPlugin } from '../observer.js';
import { controlSocketPlugin } from './control-socket.js';
import { stateDumpPlugin } from './dump-plugin.js';
import { flowsPlugin } from './flows-plugin.js';
import { hooksPlugin } from './hooks-plugin.js';
import { httpPlugin } from './http-plugin.js';
import { stateFilePlugin } from './state-plugin.js';
import { vrrpPlugin } from './vrrp-plugin.js';

export const operationsPlugins: DaemonPlugin[] = [
  stateFilePlugin,
  stateDumpPlugin,
  httpPlugin,
  hooksPlugin,
  vrrpPlugin,
  flowsPlugin,
  controlSocketPlugin,
];
