import type { Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { PERMIT_CHAIN_WORKFLOW } from '../contract/messages';

export type History = temporal.api.history.v1.IHistory;

/** One run of a plan's workflow and its event history, as the server keeps it. */
export interface PlanRun {
  workflowId: string;
  runId: string;
  startedAt: Date;
  history: History;
}

/** Which plans' runs to fetch: the chain's (its task queue), started in a time range and/or running now. */
export interface RunSelection {
  taskQueue: string;
  startedFrom?: Date;
  startedTo?: Date;
  running?: boolean;
}

/** The visibility query for a selection: the chain's workflow type and task queue, started in the range OR running. */
export function runQuery(selection: RunSelection): string {
  const range = [
    ...(selection.startedFrom ? [`StartTime >= "${selection.startedFrom.toISOString()}"`] : []),
    ...(selection.startedTo ? [`StartTime <= "${selection.startedTo.toISOString()}"`] : []),
  ].join(' AND ');
  const either = [...(range ? [`(${range})`] : []), ...(selection.running ? ['ExecutionStatus = "Running"'] : [])];
  const type = `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND TaskQueue = "${selection.taskQueue}"`;
  return either.length > 0 ? `${type} AND (${either.join(' OR ')})` : type;
}

/**
 * The runs of the plans a selection finds, each with its full history (every page), oldest start first. Reads
 * only: a visibility list and one history fetch per run. Each run of a continued-as-new plan comes on its own.
 */
export async function fetchPlanRuns(client: Client, selection: RunSelection): Promise<PlanRun[]> {
  const found: { workflowId: string; runId: string; startedAt: Date }[] = [];
  for await (const info of client.workflow.list({ query: runQuery(selection), pageSize: 1000 })) {
    found.push({ workflowId: info.workflowId, runId: info.runId, startedAt: info.startTime });
  }
  found.sort((a, b) => a.startedAt.getTime() - b.startedAt.getTime() || a.workflowId.localeCompare(b.workflowId));
  const runs: PlanRun[] = [];
  for (const run of found) {
    const history = await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory();
    runs.push({ ...run, history });
  }
  return runs;
}
