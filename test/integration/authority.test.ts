import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPaperExchange } from '../../activities/exchange/paper';
import type { ExchangePort } from '../../activities/exchange/port';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { temporalCliExecutable } from '../../cli/servers';
import type { ChainStatus, Plan } from '../../contract/types';
import {
  PERMIT_CHAIN_WORKFLOW,
  chainStageKey,
  planWorkflowId,
  statusQuery,
  tradingModeKey,
} from '../../contract/messages';
import type { permitChain } from '../../workflows';
import { DEFAULT_INTAKE_OPTIONS, PlanIntake } from '../../workers/intake';
import { runCli } from '../../scripts/stack/cli-runner';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  pairs,
  setPositions,
  testApprovers,
  testEnv,
  type ChainHarness,
  waitForStage,
} from '../helpers';

const exec = promisify(execFile);

/**
 * The worker is the only authority on a plan's rules: here it runs in production mode, and every test tries to get
 * around that from outside — with the official temporal CLI, with a hand-made input, with the Web UI's cancel.
 */
const approvers = testApprovers('alice');
const env = testEnv({ TRADING_MODE: 'production', APPROVERS: 'alice', APPROVER_KEYS_DIR: approvers.dir });
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

function temporalCli(): string {
  const cli = temporalCliExecutable();
  if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
  return cli.path;
}

/** Starts a permitChain workflow with any input at all, as `temporal workflow start` lets anyone do. */
async function startRaw(workflowId: string, input: unknown): Promise<void> {
  await exec(temporalCli(), [
    'workflow',
    'start',
    '--address',
    h.config.temporalAddress,
    '--type',
    PERMIT_CHAIN_WORKFLOW,
    '--task-queue',
    h.config.taskQueue,
    '--workflow-id',
    workflowId,
    '--input',
    JSON.stringify(input),
  ]);
}

async function resultOf(workflowId: string): Promise<ChainStatus> {
  return h.client.workflow.getHandle<typeof permitChain>(workflowId).result();
}

/** Everything the chain would have written for a plan. */
async function writtenFor(planId: string): Promise<number> {
  return h.redis.exists(
    h.keys.permit(planId),
    h.keys.p33Permit(planId),
    h.keys.applyDedupe(planId),
    h.keys.applyPublished(planId),
    h.keys.execution(planId),
    h.keys.paperOrder(planId),
  );
}

describe('the workflow input is the plan alone', () => {
  it('refuses a start that carries its own settings, and writes nothing but the refusal', async () => {
    const plan = makePlan({ symbol: 'BTCUSDT' });
    const settings = { mode: 'testnet', approvers: ['mallory'], permitTtlS: 3600, permitMarginS: 0 };
    const final = await h.withWorker(async () => {
      await startRaw(planWorkflowId(plan.plan_id), { plan, settings });
      return resultOf(planWorkflowId(plan.plan_id));
    });
    expect(final.outcome).toBe('denied');
    expect(final.mode).toBe('production');
    expect(final.last_error).toBe(
      "plan: input must carry the plan only; a plan's rules are the worker's (got settings)",
    );
    expect(await writtenFor(plan.plan_id)).toBe(0);
    expect(await auditOf(h, plan.plan_id)).toEqual([
      ['governor', 'denied', expect.stringMatching(/^invalid_plan: plan: input must carry the plan only/)],
    ]);
  });

  it('refuses a plan that breaks a rule (SELL -3, not reduce-only) and leaves the position alone', async () => {
    await setPositions(h, 'XRPUSDT', '10', '10');
    const valid = makePlan({ symbol: 'XRPUSDT', qty: '3', reduce_only: false });
    const plan = { ...valid, qty: '-3' };
    const final = await h.withWorker(async () => {
      await startRaw(planWorkflowId(plan.plan_id), { plan });
      return resultOf(planWorkflowId(plan.plan_id));
    });
    expect(final.outcome).toBe('denied');
    expect(final.timeline.at(-1)?.detail).toBe('denied: invalid plan: plan: qty must be > 0 (got "-3")');
    expect(await writtenFor(plan.plan_id)).toBe(0);
    expect(await h.redis.hget(h.keys.paperPosition('XRPUSDT'), 'amount')).toBe('10');
    expect(await h.redis.hget(h.keys.position('XRPUSDT'), 'ledger_amount')).toBe('10');
  });

  it.each([
    ['a plan id that is not the workflow’s', (p: Plan) => ({ ...p, plan_id: 'ffffffffffffffff' }), 'plan_id'],
    ['a symbol that would make a Redis key', (p: Plan) => ({ ...p, symbol: 'BTC:*' }), 'symbol'],
    ['a qty with 13 integer digits', (p: Plan) => ({ ...p, qty: '1000000000000' }), 'qty'],
    ['a reason with a control character', (p: Plan) => ({ ...p, reason: 'stop\u001b[2Jhit' }), 'reason'],
    ['no created_at', ({ created_at: _c, ...p }: Plan) => p, 'created_at'],
  ])('refuses %s, naming the field', async (_case, alter, field) => {
    const plan = makePlan({ symbol: 'ETHUSDT' });
    const workflowId = planWorkflowId(plan.plan_id);
    const final = await h.withWorker(async () => {
      await startRaw(workflowId, { plan: alter(plan) });
      return resultOf(workflowId);
    });
    expect(final.outcome).toBe('denied');
    expect(final.last_error).toMatch(new RegExp(`^plan: ${field} `));
    expect(await writtenFor(plan.plan_id)).toBe(0);
  });

  it('sets TradingMode from the worker, whatever the starter claimed', async () => {
    await setPositions(h, 'SOLUSDT', '1', '1');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '1' });
    await h.withWorker(async () => {
      const handle = await h.client.workflow.start<typeof permitChain>(PERMIT_CHAIN_WORKFLOW, {
        taskQueue: h.config.taskQueue,
        workflowId: planWorkflowId(plan.plan_id),
        args: [{ plan }],
        typedSearchAttributes: [{ key: tradingModeKey, value: 'testnet' }],
      });
      await waitForStage(h, handle.workflowId, 'awaiting_approval');
      const mode = await eventually(async () => {
        const seen = (await handle.describe()).typedSearchAttributes.get(tradingModeKey);
        return seen === 'production' ? seen : undefined;
      });
      expect(mode).toBe('production');
      await handle.cancel();
      expect((await handle.result()).outcome).toBe('cancelled');
    });
  });

  it('sets ChainStage itself: a starter that claims "done" does not hide a plan waiting in line', async () => {
    await setPositions(h, 'TRXUSDT', '1', '1');
    // Another plan holds the symbol for a minute: this one waits in line, in stage governor.
    await h.redis.set(h.keys.symbolLock('TRXUSDT'), 'feedfeedfeedfeed', 'PX', 60_000);
    const plan = makePlan({ symbol: 'TRXUSDT', qty: '1' });
    try {
      await h.withWorker(async () => {
        const handle = await h.client.workflow.start<typeof permitChain>(PERMIT_CHAIN_WORKFLOW, {
          taskQueue: h.config.taskQueue,
          workflowId: planWorkflowId(plan.plan_id),
          args: [{ plan }],
          typedSearchAttributes: [{ key: chainStageKey, value: 'done' }],
        });
        const stage = await eventually(async () => {
          const seen = (await handle.describe()).typedSearchAttributes.get(chainStageKey);
          return seen === 'governor' ? seen : undefined;
        });
        expect(stage).toBe('governor');
        await handle.cancel();
        expect((await handle.result()).outcome).toBe('cancelled');
      });
    } finally {
      await h.redis.del(h.keys.symbolLock('TRXUSDT'));
    }
  });
});

describe("Temporal's cancellation is a cancel", () => {
  it('ends a blocked plan cancelled, audited, with its search attributes, when cancelled with the temporal CLI', async () => {
    await setPositions(h, 'ADAUSDT', '5', '1');
    const plan = makePlan({ symbol: 'ADAUSDT', qty: '5' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const shown = (await waitForStage(h, workflowId, 'awaiting_approval')).awaiting;
      if (!shown) throw new Error('nothing shown');
      await handle.signal('approve', approvers.sign(plan.plan_id, 'alice', shown));
      await waitForStage(h, workflowId, 'blocked');
      await exec(temporalCli(), ['workflow', 'cancel', '--address', h.config.temporalAddress, '-w', workflowId]);
      const final = await handle.result();
      expect(final.outcome).toBe('cancelled');
      expect(final.timeline.at(-1)?.detail).toBe(
        'cancelled: cancelled by temporal: cancellation requested through Temporal',
      );
      const listed = await eventually(async () => {
        const found: string[] = [];
        for await (const info of h.client.workflow.list({
          query: `WorkflowId = "${workflowId}" AND ChainStage = "done" AND ChainOutcome = "cancelled"`,
        })) {
          found.push(info.workflowId);
        }
        return found.length > 0 ? found : undefined;
      });
      expect(listed).toEqual([workflowId]);
      expect((await handle.describe()).status.name).toBe('COMPLETED');
    });
    expect(await auditOf(h, plan.plan_id)).toContainEqual([
      'operator',
      'cancel_requested',
      'temporal: cancellation requested through Temporal',
    ]);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(0);
  });

  it('lets the fill reach the ledger when the cancellation comes while the order is being placed', async () => {
    await setPositions(h, 'DOTUSDT', '4', '4');
    const plan = makePlan({ symbol: 'DOTUSDT', qty: '4' });
    // The paper exchange, held at the moment of placing until the test has asked Temporal to cancel.
    const paper = createPaperExchange(h.redis, h.keys, Date.now);
    let placing!: () => void;
    const placingStarted = new Promise<void>((resolve) => (placing = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const held: ExchangePort = {
      ...paper,
      async placeMarketOrder(request) {
        placing();
        await released;
        return paper.placeMarketOrder(request);
      },
    };
    const final = await h.withWorker(
      async () => {
        const { workflowId, handle } = await startPlan(h.client, h.config, plan);
        const shown = (await waitForStage(h, workflowId, 'awaiting_approval')).awaiting;
        if (!shown) throw new Error('nothing shown');
        await handle.signal('approve', approvers.sign(plan.plan_id, 'alice', shown));
        await placingStarted;
        await handle.cancel();
        await eventually(async () => {
          const status = await handle.query(statusQuery);
          return status.timeline.some((t) => t.detail.startsWith('cancel by temporal refused')) ? true : undefined;
        });
        release();
        return handle.result();
      },
      undefined,
      { exchange: held },
    );
    expect(final.outcome).toBe('executed');
    expect(await h.redis.hget(h.keys.paperPosition('DOTUSDT'), 'amount')).toBe('0');
    expect(await h.redis.hget(h.keys.position('DOTUSDT'), 'ledger_amount')).toBe('0');
  });
});

describe('a plan id means one plan', () => {
  it('refuses submit --plan-id of an existing plan with other fields, naming them; the same fields reach it', async () => {
    await setPositions(h, 'LTCUSDT', '1', '1');
    const planId = '0123456789abcdef';
    const base = ['submit', '--symbol', 'LTCUSDT', '--side', 'SELL', '--qty', '1', '--plan-id', planId];
    const first = await runCli(base, env);
    expect(first.code).toBe(0);
    const other = await runCli(
      ['submit', '--symbol', 'LTCUSDT', '--side', 'BUY', '--qty', '2', '--plan-id', planId],
      env,
    );
    expect(other.code).toBe(2);
    expect(other.stderr).toBe(
      `permit-chain: plan: plan_id ${planId} is already a different plan (it differs in side, qty)\n`,
    );
    const same = await runCli(base, env);
    expect(same.code).toBe(0);
    expect(same.stdout).toContain(`workflow_id plan-${planId}`);
    await h.client.workflow.getHandle(planWorkflowId(planId)).cancel();
  });

  it('dead-letters an upstream entry whose plan id names another plan', async () => {
    const existing = makePlan({ symbol: 'BNBUSDT', qty: '1' });
    await startPlan(h.client, h.config, existing);
    const reader = new Redis(h.config.redisUrl);
    const intake = new PlanIntake(
      { reader, writer: h.redis, client: h.client, config: h.config, log: () => undefined },
      { ...DEFAULT_INTAKE_OPTIONS, consumer: 'authority-test' },
    );
    await h.redis.xadd(
      h.keys.exitPlanStream,
      '*',
      ...['plan_id', existing.plan_id, 'action', 'EXECUTE', 'symbol', 'BNBUSDT', 'side', 'SELL', 'qty', '9'],
      ...['source', 'exit-monitor'],
    );
    const running = intake.run();
    const dead = await eventually(async () => {
      const entries = await h.redis.xrange(h.keys.exitPlanDeadStream, '-', '+');
      return entries.length > 0 ? Object.fromEntries(pairs(entries[0]?.[1] ?? [])) : undefined;
    });
    intake.stop();
    await running;
    reader.disconnect();
    expect(dead.error).toBe(`plan: plan_id ${existing.plan_id} is already a different plan (it differs in qty)`);
    expect(await h.redis.xpending(h.keys.exitPlanStream, 'permit-chain')).toEqual([0, null, null, null]);
    await h.client.workflow.getHandle(planWorkflowId(existing.plan_id)).cancel();
  });
});
