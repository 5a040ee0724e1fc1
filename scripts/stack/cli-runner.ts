import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** The checkout's `permit-chain`, run from its sources (the project's root is this folder's grandparent). */
const ROOT = join(__dirname, '..', '..');
export const CLI = join(ROOT, 'cli', 'permit-chain.cjs');

/** The checkout's tools with an entry of their own, as `npm run bench -- …` runs them: Node with tsx. */
export const TOOLS = {
  bench: join(ROOT, 'scripts', 'bench-main.ts'),
  chaos: join(ROOT, 'scripts', 'chaos', 'main.ts'),
} as const;

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `permit-chain` as a user would: a separate process, its own environment, its exit code. */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CliRun> {
  return runCliIn(args, { ...process.env, ...env }, timeoutMs);
}

/** Runs a tool of the checkout (`npm run <tool> -- args`) the same way: a separate process, its exit code. */
export function runTool(
  tool: keyof typeof TOOLS,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<CliRun> {
  const nodeArgs = ['--import', 'tsx', TOOLS[tool], ...args];
  const shown = `npm run ${tool} -- ${args.join(' ')}`;
  // In the checkout, as npm runs it: `--import tsx` is resolved from there.
  return runNode(nodeArgs, { ...process.env, ...env }, timeoutMs, shown, ROOT);
}

/**
 * Runs `permit-chain` in a shell that holds exactly `env` (and PATH and HOME): nothing of the test process's
 * environment, as an operator's shell that has only what the runbook gives it.
 */
export function runCliOnly(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CliRun> {
  const shell = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
  return runCliIn(args, { ...shell, ...env }, timeoutMs);
}

function runCliIn(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<CliRun> {
  return runNode([CLI, ...args], env, timeoutMs, `permit-chain ${args.join(' ')}`);
}

/** `node nodeArgs`; `shown` names the command line if it does not finish in time. */
function runNode(
  nodeArgs: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  shown: string,
  cwd?: string,
): Promise<CliRun> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, nodeArgs, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`${shown} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

/** A shell word: the argument as it is, in single quotes. */
function shellWord(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

/**
 * Runs `permit-chain` on a terminal, as a person at a keyboard would: util-linux `script` gives it a pseudo-terminal
 * for standard input and output (both then read as a TTY). When its output first matches `prompt`, `answer` is
 * called and what it returns is typed. Output is the terminal's: stdout and stderr together, lines ending in CRLF.
 */
export function runCliOnTerminal(
  args: string[],
  env: Record<string, string>,
  prompt: RegExp,
  answer: (shownSoFar: string) => Promise<string>,
  timeoutMs = 60_000,
): Promise<{ code: number | null; output: string }> {
  return new Promise((done, fail) => {
    const command = [process.execPath, CLI, ...args].map(shellWord).join(' ');
    const child = spawn('script', ['--quiet', '--return', '--command', command, '/dev/null'], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    let asked = false;
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (asked || !prompt.test(output)) return;
      asked = true;
      answer(output).then(
        (typed) => child.stdin.write(typed),
        (err: unknown) => {
          child.kill('SIGKILL');
          fail(err instanceof Error ? err : new Error(String(err)));
        },
      );
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`permit-chain ${args.join(' ')} on a terminal did not finish in ${timeoutMs} ms\n${output}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      done({ code, output: output.replaceAll('\r', '') });
    });
  });
}

export interface CliProcess {
  /** stdout and stderr so far, in arrival order. */
  output(): string;
  stderr(): string;
  /** Resolves with the match of `pattern` in the output once it appears. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A long-running `permit-chain` command (worker, intake) as a separate process. */
export function startCli(args: string[], env: Record<string, string>): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: 'pipe' });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => {
    err += chunk.toString();
    out += chunk.toString();
  });
  const exited = new Promise<number | null>((done) => child.once('exit', done));
  return {
    output: () => out,
    stderr: () => err,
    waitFor: async (pattern, timeoutMs = 60_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = pattern.exec(out);
        if (match) return match;
        if (child.exitCode !== null || Date.now() > deadline) {
          throw new Error(`${pattern} not in the output of permit-chain ${args.join(' ')}:\n${out}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
