import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CARRIED_FORMAT, CARRIED_FORMATS_READ, readCarried } from '../../activities/carry';
import { admitInput } from '../../lib/plan';

/**
 * What a run hands to the run it continues as is a contract between builds: the records here were written by
 * carryOver (format 1) and are never re-recorded. Every later build must still read them, or refuse them by name
 * once format 1 is retired (docs/contract.md, "Between builds").
 */
const FIXTURES = join(__dirname, '..', 'fixtures', 'carried');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');

/** The run a record says it was written for: the run that continues from it, as the server would name it. */
function expectedOf(raw: string) {
  const record = JSON.parse(raw) as { workflow_id: string; run_id: string };
  return {
    workflowId: record.workflow_id,
    previousRunId: record.run_id,
    planId: record.workflow_id.replace(/^plan-/, ''),
  };
}

describe('carried state, format 1, read by this build (old to new)', () => {
  it('takes a blocked plan where it waited: the denial, its first start, its attempts and publication', () => {
    const raw = fixture('format-1-blocked.json');
    const read = readCarried(raw, expectedOf(raw));
    if (!('state' in read)) throw new Error(`refused: ${read.why}`);
    const { state } = read;
    expect(state.waiting.stage).toBe('blocked');
    if (state.waiting.stage !== 'blocked') return;
    expect(state.waiting.denial).toMatchObject({
      allow: false,
      reason: 'reconcile_required_qty_mismatch',
      exchange_amount: '0.062',
      ledger_amount: '0.002',
    });
    expect(state.started_at).toBe(1796670600481);
    expect(state.status).toMatchObject({ stage: 'blocked', attempts: 1, mode: 'testnet' });
    expect(state.status.apply?.stream_id).toBe('1796670600570-0');
  });

  it('takes a plan awaiting approval where it waited: the positions shown, its deadline, the signatures needed', () => {
    const raw = fixture('format-1-awaiting.json');
    const read = readCarried(raw, expectedOf(raw));
    if (!('state' in read)) throw new Error(`refused: ${read.why}`);
    const { waiting, status } = read.state;
    expect(waiting.stage).toBe('awaiting_approval');
    if (waiting.stage !== 'awaiting_approval') return;
    expect(waiting.shown).toMatchObject({ exchange_amount: '2', ledger_amount: '2', tolerance: '0.001' });
    expect(waiting.until).toBeGreaterThan(read.state.started_at);
    expect(waiting.stale).toBe(false);
    expect(waiting.required).toBe(1);
    expect(status).toMatchObject({ stage: 'awaiting_approval', mode: 'production' });
  });

  it('is the format this build writes, and one it reads', () => {
    for (const name of ['format-1-blocked.json', 'format-1-awaiting.json']) {
      expect((JSON.parse(fixture(name)) as { format: number }).format).toBe(1);
    }
    expect(CARRIED_FORMATS_READ).toContain(CARRIED_FORMAT);
    expect(CARRIED_FORMATS_READ).toContain(1);
  });
});

describe('carried state this build does not read', () => {
  const raw = fixture('format-1-blocked.json');
  const expected = expectedOf(raw);
  const record = JSON.parse(raw) as Record<string, unknown>;

  it('refuses an unknown format, naming it and the formats it reads', () => {
    const read = readCarried(JSON.stringify({ ...record, format: 2 }), expected);
    expect(read).toEqual({ why: 'the state is in format 2, which this build does not read (it reads format 1)' });
  });

  it('refuses a record that names no format', () => {
    const { format: _format, ...unnamed } = record;
    const read = readCarried(JSON.stringify(unnamed), expected);
    expect(read).toEqual({ why: 'the state is in no format, which this build does not read (it reads format 1)' });
  });

  it.each([
    ['not JSON', '{"format": 1,', 'the state is not JSON'],
    ['not a record', '[1]', 'the state is not a record'],
    ['a record with no status', JSON.stringify({ ...record, state: { waiting: {} } }), 'the state has no plan status'],
  ])('refuses %s', (_name, text, why) => {
    expect(readCarried(text, expected)).toEqual({ why });
  });

  const awaiting = JSON.parse(fixture('format-1-awaiting.json')) as { state: { waiting: Record<string, unknown> } };
  const waitingAs = (base: { state: object }, waiting: Record<string, unknown>) =>
    JSON.stringify({ ...base, state: { ...base.state, waiting } });
  it.each([
    [
      'no approvals needed',
      { ...awaiting.state.waiting, required: 0 },
      "the state's waiting.required is not as format 1 writes it",
    ],
    [
      'no deadline',
      { ...awaiting.state.waiting, until: 'soon' },
      "the state's waiting.until is not as format 1 writes it",
    ],
    ['a stage it does not know', { stage: 'executing' }, "the state's waiting.stage is not as format 1 writes it"],
  ])('refuses a wait with %s: the plan starts over rather than act on it', (_name, waiting, why) => {
    const raw = fixture('format-1-awaiting.json');
    expect(readCarried(waitingAs(awaiting, waiting), expectedOf(raw))).toEqual({ why });
  });

  it('refuses a record written by another run', () => {
    const read = readCarried(raw, { ...expected, previousRunId: 'another-run' });
    expect('why' in read && read.why).toMatch(/^the state was written by run .+, not by run another-run/);
  });
});

describe('the continue-as-new input (the plan alone), as a run of this build writes it', () => {
  it("passes the Governor's admission of the next run, unchanged", () => {
    const input = JSON.parse(fixture('continue-as-new-input.json')) as { plan: { plan_id: string } };
    expect(Object.keys(input)).toEqual(['plan']);
    expect(admitInput(input, `plan-${input.plan.plan_id}`)).toEqual(input.plan);
  });
});
