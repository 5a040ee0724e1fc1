import type { ChainClient } from '../../client/chain-client';
import type { OperatorReply } from '../../contract/types';
import type { ChainConfig } from '../../lib/config';
import type { Output } from '../output';

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
