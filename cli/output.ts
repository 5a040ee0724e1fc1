import type { PositionView } from '../client/chain-client';
import type { PlanRow, ReconcilePreview } from '../client/operations';
import type { ChainStatus } from '../contract/types';
import { describeUnrecorded } from '../activities/unrecorded';
import { quorumProgressLine } from '../lib/quorum';

/** Where a command writes: text lines for people, or one JSON object with `--json`. */
export interface Output {
  json: boolean;
  line(text: string): void;
  result(text: string, value: object): void;
}

export function createOutput(json: boolean, write: (text: string) => void = (t) => process.stdout.write(t)): Output {
  return {
    json,
    line: (text) => {
      if (!json) write(`${text}\n`);
    },
    result: (text, value) => write(json ? `${JSON.stringify(value)}\n` : `${text}\n`),
  };
}

function time(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}

/** The `status` query as a person reads it: stage, outcome, permits, then the timeline. */
export function formatStatus(status: ChainStatus): string {
  const closed = status.closed;
  const ending = status.outcome ? `  outcome ${status.outcome}` : closed ? `  ${closed.status.toUpperCase()}` : '';
  const lines = [
    `plan ${status.plan_id}  stage ${status.stage}${ending}  mode ${status.mode ?? '-'}  attempts ${status.attempts}`,
  ];
  if (closed) {
    const how = closed.status.replace('_', ' ');
    const why = closed.reason ? ` (${closed.reason})` : '';
    lines.push(`  closed    ${how} by Temporal during ${status.stage}${why} at ${time(closed.at)}`);
    lines.push(`  next      ${closed.next_step}`);
  }
  const g = status.governor;
  if (g) {
    lines.push(
      `  governor  ${g.granted ? 'granted' : 'denied'} (${g.reason})${g.approved_by ? ` by ${g.approved_by}` : ''}, expires ${time(g.expires_at)}`,
    );
  }
  const waiting = status.awaiting;
  if (waiting) {
    lines.push(
      `  approval  awaiting approval: exchange ${waiting.exchange_amount}, ledger ${waiting.ledger_amount}, tolerance ${waiting.tolerance}`,
    );
  }
  if (waiting && status.quorum) {
    lines.push(
      `  approvals ${quorumProgressLine(status.quorum.required, status.approvals ?? [], status.quorum.approvers)}`,
    );
  }
  for (const approval of status.approvals ?? (status.approval ? [status.approval] : [])) {
    lines.push(
      `  approval  by ${approval.by} at ${time(approval.at)}${approval.note ? ` (${approval.note})` : ''}, ` +
        `seeing exchange ${approval.snapshot.exchange_amount}, ledger ${approval.snapshot.ledger_amount}`,
    );
  }
  if (status.apply) lines.push(`  apply     stream id ${status.apply.stream_id}`);
  const p = status.p33;
  if (p) {
    lines.push(
      `  p33       ${p.allow ? 'allowed' : 'denied'} (${p.reason}): exchange ${p.exchange_amount}, ledger ${p.ledger_amount}, discrepancy ${p.discrepancy}, tolerance ${p.tolerance}`,
    );
  }
  const e = status.execution;
  if (e) lines.push(`  execute   ${e.status} ${e.side} ${e.filled_qty} @ ${e.avg_price}, order ${e.order_id}`);
  if (status.last_error) lines.push(`  error     ${status.last_error}`);
  // A plan Temporal closed has its own next step (above); what its workflow last said no longer holds.
  if (status.next_look_at !== undefined && !closed) lines.push(`  re-check  next at ${time(status.next_look_at)}`);
  // What the Web UI's details show as "Next:" (the command, and who may still sign), without the markdown.
  if (status.next_step && !closed) lines.push(`  next      ${status.next_step.replace(/`/g, '')}`);
  lines.push('  timeline');
  for (const entry of status.timeline) lines.push(`    ${time(entry.at)}  ${entry.stage.padEnd(17)} ${entry.detail}`);
  return lines.join('\n');
}

/** `list`: a count, a header naming the columns, then one line a plan. */
export function formatPlanRows(plans: PlanRow[]): string {
  const row = (cells: string[]) =>
    `${(cells[0] ?? '').padEnd(16)}  ${(cells[1] ?? '').padEnd(10)} ${(cells[2] ?? '').padEnd(17)} ` +
    `${(cells[3] ?? '').padEnd(10)} ${(cells[4] ?? '').padEnd(10)} ${cells[5] ?? ''}`;
  const header = row(['PLAN', 'SYMBOL', 'STAGE', 'OUTCOME', 'MODE', 'STARTED']);
  const lines = plans.map(
    (p) =>
      row([p.plan_id, p.symbol, p.stage, p.outcome || '-', p.mode, p.started_at]) +
      (p.next_step ? `  ${p.next_step}` : ''),
  );
  return [`${plans.length} plan(s)`, ...(plans.length > 0 ? [header] : []), ...lines].join('\n');
}

/** `position`: both amounts, their discrepancy against the tolerance, and whether P3.3 would allow. */
export function formatPosition(view: PositionView): string {
  const line =
    `${view.symbol}  exchange ${view.exchange_amount}  ledger ${view.ledger_amount}  discrepancy ${view.discrepancy}  ` +
    `tolerance ${view.tolerance}  ${view.within_tolerance ? 'ok' : 'RECONCILE REQUIRED'}`;
  const orders = view.unrecorded_orders.map((order) => `\n  on the exchange, ${describeUnrecorded(order)}`);
  return line + orders.join('');
}

/** What `reconcile` would change, as a person checks it before saying yes. */
export function formatReconcilePreview(preview: ReconcilePreview, by: string): string {
  const fills =
    preview.fills.length > 0 ? `${preview.fills.length} fill(s) it accounts for: ${preview.fills.join(', ')}` : 'none';
  return [
    `reconcile ${preview.symbol} by ${by}:`,
    `  ledger     ${preview.before} -> ${preview.exchange}`,
    `  exchange   ${preview.exchange} (the ledger becomes the exchange's amount)`,
    `  unapplied  ${fills}`,
    ...preview.orders.map((order) => `  order      ${describeUnrecorded(order)} (accounted for)`),
  ].join('\n');
}
