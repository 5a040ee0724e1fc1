/**
 * The chain's own processes as `ProcessSpec`s: `permit-chain worker` and `permit-chain intake`, run exactly as a
 * deployment runs them (the CLI, through `node`, with an environment), each ready when it prints its first line.
 */
import { CLI } from './cli-runner';
import type { ProcessSpec } from './processes';

/**
 * `permit-chain worker`: ready once its workflow bundle is built and it says which task queue it serves (a readable
 * line on a terminal, the `msg` of a JSON line otherwise).
 */
export function workerSpec(name: string, env: Record<string, string>, cli = CLI): ProcessSpec {
  return {
    name,
    command: process.execPath,
    args: [cli, 'worker'],
    env,
    ready: /(^|"msg":")worker: .* task queue /,
    // It bundles the workflows at start: seconds, more on a busy machine.
    readyTimeoutMs: 120_000,
    // Its graceful shutdown lets running activities finish.
    stopTimeoutMs: 15_000,
  };
}

/** `permit-chain intake --consumer NAME`: ready once it says which stream and consumer it reads as. */
export function intakeSpec(
  name: string,
  env: Record<string, string>,
  options: { consumer?: string; claimIdle?: string } = {},
): ProcessSpec {
  return {
    name,
    command: process.execPath,
    args: [CLI, 'intake', '--consumer', options.consumer ?? name, '--claim-idle', options.claimIdle ?? '30s'],
    env,
    ready: /(^|"msg":")intake: .* reading /,
    readyTimeoutMs: 60_000,
  };
}
