/**
 * The daemon with its test and benchmark hooks: `node test/instrument/dist/entry.js run -c FILE`
 * is `nf-healthd run -c FILE` plus the hooks below, each off until its environment
 * variable arms it. Built by test/instrument/build.mjs; dist/ (what ships) has none of it.
 */
import type { main as cliMain } from '../../src/cli.js';
import { heapPlugin } from './heap.js';
import { samplesPlugin } from './samples.js';
import { wedgePlugin } from './wedge.js';

// The production build itself, loaded at run time: the hooks are added around it, not compiled into it.
const cli = new URL('../../../dist/cli.js', import.meta.url);
const { main } = (await import(cli.href)) as { main: typeof cliMain };

process.exitCode = await main(process.argv.slice(2), undefined, { plugins: [wedgePlugin, samplesPlugin, heapPlugin] });
