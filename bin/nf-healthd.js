#!/usr/bin/env -S node --max-semi-space-size=32
import { main } from '../dist/cli.js';

process.exitCode = await main(process.argv.slice(2));
