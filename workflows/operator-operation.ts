import { proxyActivities } from '@temporalio/workflow';
import type { OperatorActivities, OperatorAnswer, OperatorRequest } from '../contract/operations';

/**
 * One operator's operation, performed once by a worker of the chain's task queue under its configuration (its
 * exchange, key prefix and tolerance). Never retried: the operator sees the failure and decides; a reconcile is
 * bounded by its wait for the symbol (30 s) and the exchange's answers.
 */
const { performOperation } = proxyActivities<OperatorActivities>({
  startToCloseTimeout: '90s',
  retry: { maximumAttempts: 1 },
});

export async function operatorOperation(request: OperatorRequest): Promise<OperatorAnswer> {
  return performOperation(request);
}
