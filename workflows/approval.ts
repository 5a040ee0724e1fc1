import { log } from '@temporalio/workflow';
import type { ChainStatus } from '../contract/types';
import type { Ending } from './chain-calls';
import { continueIfDue, shouldContinue } from './continue-as-new';
import type { PlanRun } from './plan-run';
import { awaitingNextStep, clockTime } from './status-board';

/** What the approvers are asked to sign: the positions shown, whether they moved since, how many must sign. */
interface ApprovalAsk {
  shown: NonNullable<ChainStatus['awaiting']>;
  stale: boolean;
  required: number;
}

/**
 * People decide (production mode), shown the plan and the positions P3.3 sees now, until `until` (a continued run
 * waits out its predecessor's deadline, never longer than APPROVAL_TIMEOUT_S from now): `required` distinct
 * approvers sign (the approvals the plan holds count), or one rejects. 'again' once approved: the plan asks the
 * Governor for its permit with the signatures.
 */
export async function awaitApproval(
  run: PlanRun,
  { shown, stale, required }: ApprovalAsk,
  resumedUntil?: number,
): Promise<'again' | Ending> {
  const { board, plan, rules } = run;
  const { status } = board;
  const fresh = Date.now() + rules.approvalTimeoutS * 1000;
  const until = Math.min(resumedUntil ?? fresh, fresh);
  status.awaiting = shown;
  status.quorum = { required, approvers: rules.approvers };
  if (resumedUntil === undefined) {
    const quorum = required > 1 ? ` by ${required} distinct approvers` : '';
    board.enter(
      'awaiting_approval',
      `${stale ? `positions moved since the approval${required > 1 ? 's' : ''}; ` : ''}awaiting approval${quorum} ` +
        `of ${plan.side} ${plan.qty} ${plan.symbol}: exchange ${shown.exchange_amount}, ` +
        `ledger ${shown.ledger_amount}, tolerance ${shown.tolerance}; ` +
        `until ${clockTime(until)} UTC`,
      awaitingNextStep(plan, until, required),
    );
    log.info('operator: awaiting approval', { who: rules.approvers.join(', '), required });
  } else board.resumeAt(awaitingNextStep(plan, until, required), `awaiting approval until ${clockTime(until)} UTC`);
  for (;;) {
    const timeoutMs = Math.min(until - Date.now(), run.planDeadline - Date.now());
    const decision = await run.desk.awaitDecision(shown, required, timeoutMs, () => shouldContinue(run));
    if (decision === 'wake') {
      await continueIfDue(run, { stage: 'awaiting_approval', shown, until, stale, required });
      continue;
    }
    delete status.awaiting;
    if (!decision) {
      return run.cancelled() ?? { outcome: 'expired', detail: `no approval within ${rules.approvalTimeoutS}s` };
    }
    if (decision !== 'approved') {
      return { outcome: 'rejected', detail: `rejected by ${decision.by}: ${decision.reason}` };
    }
    return 'again';
  }
}
