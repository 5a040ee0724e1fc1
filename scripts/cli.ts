import { createInterface } from 'node:readline/promises';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { ChainClient, ClientError } from '../client/chain-client';
import { ConfigError, loadConfig } from '../lib/config';
import { PlanError } from '../lib/plan';
import { redactUrl } from '../lib/redact';
import { UsageError, type CommandContext } from './commands/context';
import { addChaosCommand } from './commands/chaos';
import { addOperatorsCommands } from './commands/operators';
import { addPlansCommands } from './commands/plans';
import { addProcessesCommands } from './commands/processes';
import { addSafeChangesCommands } from './commands/safe-changes';
import { createOutput, type Output } from './output';
import { versionText } from './version';

export { UsageError } from './commands/context';

/**
 * `permit-chain`: a table of commands, each parsing its arguments, asking the client room (client/) or starting a
 * process (workers/, dev), and printing what it got (scripts/commands/). Exit codes: 0 done, 2 bad input or a refusal
 * to act on, 3 an operator's decision refused or a plan not executed, 1 anything else.
 */
export function buildProgram(out: () => Output, env: NodeJS.ProcessEnv = process.env) {
  let exitCode = 0;
  const ctx: CommandContext = {
    env,
    config: () => loadConfig(env),
    out,
    async withChain(run) {
      const chain = new ChainClient(loadConfig(env));
      try {
        await run(chain, out());
      } finally {
        await chain.close();
      }
    },
    reply(o, planId, answer) {
      o.result(`${answer.accepted ? 'accepted' : 'refused'}: ${answer.detail}`, { plan_id: planId, ...answer });
      exitCode = answer.accepted ? 0 : 3;
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
  const program = new Command('permit-chain')
    .description('Durable permit chain: Governor → Apply → P3.3 → Execute, one Temporal workflow per plan')
    .option('--json', 'print one JSON object instead of text')
    .version(versionText(), '-V, --version', 'the version of permit-chain and of the Temporal SDK it runs')
    .showSuggestionAfterError(false)
    .exitOverride()
    // One line, in the same voice as every other refusal.
    .configureOutput({ writeErr: (text) => process.stderr.write(`permit-chain: ${firstLine(text)}\n`) });
  addProcessesCommands(program, ctx);
  addPlansCommands(program, ctx);
  addOperatorsCommands(program, ctx);
  addSafeChangesCommands(program, ctx);
  addChaosCommand(program, ctx);
  return { program, exitCode: () => exitCode };
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').replace(/^error: /, '');
}

/** Runs the CLI; returns the exit code. Every failure is one line on stderr. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const cli = buildProgram(() => createOutput(argv.includes('--json')), env);
  try {
    await cli.program.parseAsync(argv);
    return cli.exitCode();
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof InvalidArgumentError) return 2;
    const usage = [PlanError, ConfigError, UsageError, ClientError].some((kind) => err instanceof kind);
    // The last guard: whatever an error carries, a connection URL's password is not printed.
    process.stderr.write(`permit-chain: ${redactUrl(err instanceof Error ? err.message : String(err))}\n`);
    return usage ? 2 : 1;
  }
}

// The compiled CLI runs itself (`node dist/scripts/cli.js`); in a checkout, scripts/permit-chain.cjs runs it via tsx.
if (typeof require !== 'undefined' && require.main === module) {
  void main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
