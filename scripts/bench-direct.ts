import type { ChainActivities } from '../activities';
import type { Plan } from '../contract/types';
import { planWorkflowId } from '../contract/messages';

/**
 * The chain's Redis work for one plan that goes straight through, without Temporal: the activities the workflow
 * calls, in its order, called directly in this process. The bench's floor of the Redis work; keep it in step with
 * workflows/permit-chain.ts (the activities' names and order are the workflow's, nothing else is).
 */
export async function directChain(layers: ChainActivities, plan: Plan): Promise<void> {
  const workflowId = planWorkflowId(plan.plan_id);
  const turn = await layers.governorTurn({
    admit: { input: { plan }, workflowId },
    take: true,
    permit: true,
    at: Date.now(),
  });
  if (!turn.admission?.admitted) throw new Error(`direct: not admitted: ${turn.admission?.error ?? 'no admission'}`);
  if (!turn.hold?.held) throw new Error(`direct: ${plan.symbol} is held by a plan ahead in line`);
  const { answer } = turn;
  if (answer?.kind !== 'permit' || !answer.permit.granted) throw new Error(`direct: no permit (${answer?.kind})`);
  await layers.publishPlan(plan, workflowId);
  try {
    const p33 = await layers.checkPosition(plan);
    if (!p33.allow) throw new Error(`direct: P3.3 denied: ${p33.reason}`);
    const result = await layers.executePlan(plan);
    if (!result.placed) throw new Error(`direct: not placed: ${result.detail}`);
  } finally {
    await layers.releaseSymbol(plan);
  }
}
