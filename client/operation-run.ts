import { randomUUID } from 'node:crypto';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import {
  OPERATOR_OPERATION_WORKFLOW,
  operationWorkflowId,
  type OperatorRequest,
  type WorkerIdentity,
} from '../contract/operations';
import type { ChainConfig } from '../lib/config';

/**
 * An operator's operation run in a worker (workflows/operator-operation.ts), as the client waits for it: taken by a
 * worker within a few seconds or ended unperformed, its answer or the worker's refusal, each an error the CLI maps to
 * its exit code.
 */

/** A refusal the person can act on (a plan that does not exist, one that cannot be retried): exit code 2. */
export class ClientError extends Error {
  override name = 'ClientError';
}

/** No such plan: the CLI's exit code 4, apart from a bad argument's 2. */
export class NotFoundError extends ClientError {
  override name = 'NotFoundError';
}

/** The workers did not answer (Temporal unreachable, or no worker polls the task queue): nothing was done. */
export class WorkersUnreachable extends Error {
  override name = 'WorkersUnreachable';
}

/** A worker refused an operator's operation (unsigned, a bad signature, a used nonce): exit code 3. */
export class OperationRefused extends Error {
  override name = 'OperationRefused';
}

/** How long an operation waits for a worker to take it before it says the workers are unreachable. */
export const WORKER_ANSWER_WAIT_MS = 5_000;
/** An operation no worker took is ended after this: it must not run long after the operator was told it did not. */
const OPERATION_EXECUTION_TIMEOUT = '3m';

/** An operation's answer: its result and which worker gave it, under which configuration. */
export interface Answered<T> {
  result: T;
  worker: WorkerIdentity;
  recorded_as?: string;
  operation_id: string;
}

/**
 * Runs an operation in a worker of the chain's task queue (workflows/operator-operation.ts) and returns its answer.
 * When Temporal does not answer, or no worker takes the operation within {@link WORKER_ANSWER_WAIT_MS}, it is
 * ended unperformed and {@link WorkersUnreachable} says so. A refusal is a ClientError with the worker's reason.
 */
export async function runOperation<T>(
  connecting: Promise<Client>,
  config: Pick<ChainConfig, 'temporalAddress' | 'taskQueue'>,
  request: OperatorRequest,
): Promise<Answered<T>> {
  const address = `Temporal at ${config.temporalAddress}`;
  const client = await withinWait(connecting, `${address} did not answer`);
  const workflowId = operationWorkflowId(randomUUID());
  const handle = await withinWait(
    client.workflow.start(OPERATOR_OPERATION_WORKFLOW, {
      workflowId,
      taskQueue: config.taskQueue,
      args: [request],
      workflowExecutionTimeout: OPERATION_EXECUTION_TIMEOUT,
    }),
    `${address} did not take the operation`,
  );
  const result = handle.result() as Promise<{ worker: WorkerIdentity; result: T; recorded_as?: string }>;
  // Read below once the wait is over; until then a failure must not go unhandled.
  result.catch(() => undefined);
  const early = await Promise.race([
    result.then(
      () => true,
      () => true,
    ),
    delay(WORKER_ANSWER_WAIT_MS),
  ]);
  if (!early) {
    const { historyLength } = await handle.describe();
    // Started and scheduled only: no worker has taken its first task.
    if (historyLength <= 2) {
      await handle.terminate('no worker answered in time').catch(() => undefined);
      throw new WorkersUnreachable(
        `no worker of task queue ${config.taskQueue} answered within ${WORKER_ANSWER_WAIT_MS / 1000}s ` +
          `(${address}): nothing was done`,
      );
    }
  }
  try {
    return { ...(await result), operation_id: workflowId };
  } catch (err) {
    if (err instanceof WorkflowFailedError) {
      // The activity's own message: the worker's refusal or failure, without the SDK's wrapping.
      let cause: Error | undefined = err.cause;
      while (cause?.cause instanceof Error) cause = cause.cause;
      const message = `${(cause ?? err).message} (operation ${workflowId})`;
      if (cause instanceof ApplicationFailure && cause.type === 'Refused') throw new OperationRefused(message);
      throw new ClientError(message);
    }
    throw err;
  }
}

function delay(ms: number): Promise<false> {
  return new Promise((done) => setTimeout(() => done(false), ms).unref());
}

/** `promise`, or WorkersUnreachable when it has not settled within the operation's wait. */
async function withinWait<T>(promise: Promise<T>, what: string): Promise<T> {
  promise.catch(() => undefined);
  const settled = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    delay(WORKER_ANSWER_WAIT_MS),
  ]);
  if (!settled) throw new WorkersUnreachable(`${what} within ${WORKER_ANSWER_WAIT_MS / 1000}s: nothing was done`);
  try {
    return await promise;
  } catch (err) {
    throw new WorkersUnreachable(`${what}: ${(err as Error).message.split('\n')[0]?.slice(0, 300)}: nothing was done`);
  }
}
