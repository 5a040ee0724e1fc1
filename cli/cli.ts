import { createInterface } from 'node:readline/promises';
import { Command, CommanderError } from 'commander';
import type * as ChainClientModule from '../client/chain-client';
import type * as ConfigModule from '../lib/config';
import type * as PlanModule from '../lib/plan';
import { redactUrl } from '../lib/redact';
import { EXIT, type CommandContext } from './commands/context';
import type * as DeploymentsCommands from './commands/deployments';
import type * as OperatorsCommands from './commands/operators';
import type * as PlansCommands from './commands/plans';
import type * as ProcessesCommands from './commands/processes';
import type * as SafeChangesCommands from './commands/safe-changes';
import { createOutput, type Output } from './output';
import { versionInfo, versionText } from './version';

export { UsageError } from './commands/context';

type AddCommands = (program: Command, ctx: CommandContext) => void;

/** A program's name, for its errors (`permit-chain: …`), and what builds it, given how it prints its errors. */
interface Program {
  name: string;
  build: (json: boolean, writeErr: (line: string) => void) => { program: Command; exitCode: () => number };
}

/*
 * Each group of commands is loaded only when one of its commands runs: `status` never loads the worker or the dev
 * servers, and `--version` loads none. A command missing from COMMAND_GROUPS still runs, with every group
 * loaded (a test keeps the table complete).
 */
/* eslint-disable @typescript-eslint/no-require-imports -- the lazy loads described above */
const GROUPS: Record<string, () => AddCommands> = {
  processes: () => (require('./commands/processes') as typeof ProcessesCommands).addProcessesCommands,
  plans: () => (require('./commands/plans') as typeof PlansCommands).addPlansCommands,
  operators: () => (require('./commands/operators') as typeof OperatorsCommands).addOperatorsCommands,
  'safe-changes': () => (require('./commands/safe-changes') as typeof SafeChangesCommands).addSafeChangesCommands,
  deployments: () => (require('./commands/deployments') as typeof DeploymentsCommands).addDeploymentsCommands,
};
const loadConfigModule = () => require('../lib/config') as typeof ConfigModule;
const loadChainClient = () => require('../client/chain-client') as typeof ChainClientModule;
const loadPlanModule = () => require('../lib/plan') as typeof PlanModule;
/* eslint-enable @typescript-eslint/no-require-imports */

/** Which group registers each command. */
export const COMMAND_GROUPS: Record<string, keyof typeof GROUPS> = {
  dev: 'processes',
  worker: 'processes',
  intake: 'processes',
  submit: 'plans',
  status: 'plans',
  retry: 'plans',
  position: 'plans',
  list: 'plans',
  'retry-stuck': 'plans',
  demo: 'plans',
  approve: 'operators',
  reject: 'operators',
  cancel: 'operators',
  'kill-switch': 'operators',
  reconcile: 'operators',
  keygen: 'operators',
  'register-search-attributes': 'operators',
  'what-if': 'safe-changes',
  'replay-check': 'safe-changes',
  deploy: 'deployments',
};

/** The command a command line names: its first word that is not an option (the program's options take no value). */
function commandOf(args: string[]): string | undefined {
  return args.find((arg) => !arg.startsWith('-'));
}

/**
 * `permit-chain`: a table of commands, each parsing its arguments, asking the client room (client/) or starting a
 * process (workers/, dev), and printing what it got (cli/commands/). Exit codes: EXIT (cli/commands/context).
 * `only`: register just the group of this command (all groups when it is not in COMMAND_GROUPS, or not given).
 */
export function buildProgram(
  out: () => Output,
  env: NodeJS.ProcessEnv = process.env,
  only?: string,
  writeErr: (line: string) => void = (line) => process.stderr.write(`permit-chain: ${line}\n`),
) {
  const { program, ctx, exitCode } = createProgram('permit-chain', out, env, writeErr);
  program
    .description('Durable permit chain: Governor → Apply → P3.3 → Execute, one Temporal workflow per plan')
    .version(versionText(), '-V, --version', 'the version of permit-chain and of the Temporal SDK it runs');
  const group = only !== undefined ? COMMAND_GROUPS[only] : undefined;
  const groups = group ? [group] : Object.keys(GROUPS);
  for (const name of groups) GROUPS[name]?.()(program, ctx);
  return { program, exitCode };
}

/** A program in the CLI's voice: `--json`, a usage error as one line through `writeErr`, an exit code to set. */
function createProgram(name: string, out: () => Output, env: NodeJS.ProcessEnv, writeErr: (line: string) => void) {
  let exitCode: number = EXIT.done;
  const ctx: CommandContext = {
    env,
    config: () => loadConfigModule().loadConfig(env),
    out,
    async withChain(run) {
      const { ChainClient } = loadChainClient();
      const chain = new ChainClient(loadConfigModule().loadConfig(env));
      try {
        await run(chain, out());
      } finally {
        await chain.close();
      }
    },
    reply(o, planId, answer) {
      o.result(`${answer.accepted ? 'accepted' : 'refused'}: ${answer.detail}`, { plan_id: planId, ...answer });
      exitCode = answer.accepted ? EXIT.done : EXIT.refused;
    },
    setExit: (code) => (exitCode = code),
    terminal: () => Boolean(process.stdin.isTTY && process.stdout.isTTY),
    async confirm(question) {
      const prompt = createInterface({ input: process.stdin, output: process.stdout });
      try {
        return /^\s*y(es)?\s*$/i.test(await prompt.question(question));
      } finally {
        prompt.close();
      }
    },
  };
  const program = new Command(name)
    .option('--json', 'print one JSON object instead of text (an error too: {"error", "exit_code"}, on stderr)')
    .showSuggestionAfterError(false)
    .exitOverride()
    // One line, in the same voice as every other refusal.
    .configureOutput({ writeErr: (text) => writeErr(firstLine(text)) });
  return { program, ctx, exitCode: () => exitCode };
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').replace(/^error: /, '');
}

/**
 * What an operator is shown of an error: its first line, without a stack frame or a source path, a connection URL's
 * password redacted, bounded in size.
 */
export function errorLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const line = (message.split('\n').find((part) => part.trim() !== '') ?? '').trim();
  const shown = redactUrl(line)
    // "at fn (/app/lib/x.ts:12:3)" and bare "/app/lib/x.js:12:3": where in the code is not the operator's business.
    .replace(/\s+at\s+\S*\s*\((?:file:\/\/)?\/[^)]*:\d+:\d+\)/g, '')
    .replace(/\s*\(?(?:file:\/\/)?\/[^\s()]*\.(?:[cm]?[jt]s):\d+(?::\d+)?\)?/g, '')
    .trim();
  return shown.length > 500 ? `${shown.slice(0, 500)}…` : shown;
}

/** The exit code of an error: a refusal the user can act on is 2 (4 for a plan that does not exist), else 1. */
function exitCodeOf(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.done : EXIT.badArgument;
  const { ClientError, NotFoundError } = loadChainClient();
  if (err instanceof NotFoundError) return EXIT.notFound;
  const usage = [loadPlanModule().PlanError, loadConfigModule().ConfigError, ClientError];
  if (err instanceof Error && (err.name === 'UsageError' || usage.some((kind) => err instanceof kind))) {
    return EXIT.badArgument;
  }
  return EXIT.failed;
}

/** Runs the CLI; returns the exit code. Every failure is one line on stderr (one JSON object with `--json`). */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const args = argv.slice(2);
  const json = args.includes('--json');
  // `--version` alone (with or without --json) loads nothing else.
  if (
    args.length > 0 &&
    args.every((arg) => ['--json', '-V', '--version'].includes(arg)) &&
    !args.every((a) => a === '--json')
  ) {
    const out = createOutput(json);
    const { version, buildId, temporalSdk } = versionInfo();
    out.result(versionText(), { version, build_id: buildId, temporal_sdk: temporalSdk });
    return EXIT.done;
  }
  return runProgram(argv, json, {
    name: 'permit-chain',
    build: (asJson, writeErr) => buildProgram(() => createOutput(asJson), env, commandOf(args), writeErr),
  });
}

/**
 * A tool of the checkout (scripts/: `npm run bench -- …`) run in the CLI's voice: `configure` gives the program its
 * options and action; errors are one line (one JSON object with `--json`), the exit codes are the CLI's.
 */
export function runTool(
  name: string,
  configure: (program: Command, ctx: CommandContext) => void,
  argv: string[] = process.argv,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return runProgram(argv, argv.slice(2).includes('--json'), {
    name,
    build(json, writeErr) {
      const { program, ctx, exitCode } = createProgram(name, () => createOutput(json), env, writeErr);
      configure(program, ctx);
      return { program, exitCode };
    },
  });
}

async function runProgram(argv: string[], json: boolean, { name, build }: Program): Promise<number> {
  const fail = (message: string, code: number): number => {
    process.stderr.write(json ? `${JSON.stringify({ error: message, exit_code: code })}\n` : `${name}: ${message}\n`);
    return code;
  };
  let commanderError: string | undefined;
  const cli = build(json, (line) => {
    if (json) commanderError ??= line;
    else process.stderr.write(`${name}: ${line}\n`);
  });
  try {
    await cli.program.parseAsync(argv);
    return cli.exitCode();
  } catch (err) {
    const code = exitCodeOf(err);
    if (err instanceof CommanderError) {
      // Help and usage went out already as text; under --json, a usage error is the one object.
      return code !== EXIT.done && json ? fail(commanderError ?? firstLine(err.message), code) : code;
    }
    return fail(errorLine(err), code);
  }
}

// The compiled CLI runs itself (`node dist/cli/cli.js`); in a checkout, bin/permit-chain runs it (or, from the
// sources, cli/permit-chain.cjs via tsx).
if (typeof require !== 'undefined' && require.main === module) {
  void main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
