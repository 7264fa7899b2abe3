import { type ConfigDocument, ConfigError, readConfigFile, readConfigText, sortProblems } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { compilePlan, namingProblems, type Plan, planProblems } from './compile.js';

/** Schema, then the cross-object rules, then the Plan; ConfigError lists every problem with its position. */
function planOf(doc: ConfigDocument): Plan {
  const problems = [...doc.problems, ...namingProblems(doc.raw).map(doc.place)];
  if (doc.config && problems.length === 0) problems.push(...planProblems(doc.config).map(doc.place));
  if (problems.length > 0 || !doc.config) throw new ConfigError(sortProblems(problems));
  return compilePlan(doc.config, doc.file);
}

/** Reads, validates and compiles a config file; throws ConfigError listing every problem at once. */
export function loadPlan(file: string): Plan {
  return planOf(readConfigFile(file));
}

export function parsePlan(text: string, file = '<config>'): Plan {
  return planOf(readConfigText(text, file));
}

/** A Config that passed every rule (for callers that need only the config keys). */
export function parseConfig(text: string, file = '<config>'): Config {
  return parsePlan(text, file).config;
}

export function loadConfig(file: string): Config {
  return loadPlan(file).config;
}
