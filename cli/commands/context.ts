import type { ChainClient } from '../../client/chain-client';
import type { OperatorReply } from '../../contract/types';
import type { ChainConfig } from '../../lib/config';
import type { Output } from '../output';

/**
 * The CLI's exit codes, one table (README, "Exit codes"): what a script calling `permit-chain` branches on.
 */
export const EXIT = {
  done: 0,
  /** Anything else: a server that cannot be reached, an unexpected failure. */
  failed: 1,
  /** A bad argument, option, plan field or configuration value: nothing was done. */
  badArgument: 2,
  /** Refused: an operator's decision the plan did not take, a plan that did not execute, a replay that diverges. */
  refused: 3,
  /** No such plan. */
  notFound: 4,
  /** `position`: the exchange's and the ledger's amounts differ by more than the tolerance. */
  reconcileRequired: 5,
} as const;

/** A refusal the user can act on: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** What every command gets from the CLI: its configuration, its output, the client room, and its exit code. */
export interface CommandContext {
  env: NodeJS.ProcessEnv;
  config(): ChainConfig;
  out(): Output;
  /** Runs a command with the client room, closed afterwards. */
  withChain(run: (chain: ChainClient, o: Output) => Promise<void>): Promise<void>;
  /** Prints an operator's update: accepted (exit 0), or refused with the reason (exit 3). */
  reply(o: Output, planId: string, answer: OperatorReply): void;
  setExit(code: number): void;
  /** True when a person is at a terminal (standard input and output both), who can be asked. */
  terminal(): boolean;
  /** Asks a yes/no question on the terminal; only `y` or `yes` is a yes. */
  confirm(question: string): Promise<boolean>;
}
