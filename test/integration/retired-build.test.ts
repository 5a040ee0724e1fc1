import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { NativeConnection } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import { startPlan, planStatus, type StartedPlan } from '../../client/plans';
import { pinnedVersionOf } from '../../client/deployment-version';
import { reportRetries } from '../../client/retry-report';
import type { WhatIfReport } from '../../client/what-if';
import { loadConfig } from '../../lib/config';
import type { ChainStatus, Plan } from '../../contract/types';
import type { permitChain } from '../../workflows';
import { connectWorkerTemporal } from '../../workers/worker';
import { runCli } from '../../scripts/stack/cli-runner';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  setPositions,
  testEnv,
  waitForStage,
  type ChainHarness,
} from '../helpers';
import { setCurrentBuild, startBuild, type RunningBuild } from '../worker-versions';

/**
 * Plans that ran on build A, read and retried after build B became current and A's workers stopped: an ended plan
 * needs no worker of the build it ran on (a query to it would wait for one), and a failed one is retried onto B.
 */
const base = testEnv({ WORKER_VERSIONING: 'true' });
const env = { ...base, WORKER_DEPLOYMENT: `deploy-${base.TASK_QUEUE}` };
const config = loadConfig(env);
/** Well below the ~15 s a query to a closed plan of a stopped build waits before it fails. */
const QUICK_MS = 3_000;

let h: ChainHarness;
let connection: NativeConnection;
let buildB: RunningBuild | undefined;
const plans: Record<'executed' | 'failed' | 'terminated', { plan: Plan; started?: StartedPlan }> = {
  executed: { plan: makePlan({ symbol: 'ICPUSDT', qty: '1' }) },
  failed: { plan: makePlan({ symbol: 'APTUSDT', qty: '1' }) },
  terminated: { plan: makePlan({ symbol: 'ARBUSDT', qty: '1' }) },
};

beforeAll(async () => {
  h = await chainHarness(config);
  connection = await connectWorkerTemporal(config);
  const deps = { config, redis: h.redis, client: h.client, connection };
  const buildA = await startBuild(deps, 'A');
  try {
    await setCurrentBuild(h.client, config.workerDeployment, 'A');
    await setPositions(h, 'ICPUSDT', '2', '2');
    await setPositions(h, 'APTUSDT', '1', 'garbage'); // P3.3 cannot read the ledger: the plan fails
    await setPositions(h, 'ARBUSDT', '2', '1'); // beyond the tolerance: the plan waits blocked
    for (const entry of Object.values(plans)) entry.started = await startPlan(h.client, config, entry.plan);
    expect((await plans.executed.started?.handle.result())?.outcome).toBe('executed');
    expect((await plans.failed.started?.handle.result())?.outcome).toBe('failed');
    await waitForStage(h, plans.terminated.started?.workflowId ?? '', 'blocked');
    await plans.terminated.started?.handle.terminate('test: given up while blocked');
    buildB = await startBuild(deps, 'B');
    await setCurrentBuild(h.client, config.workerDeployment, 'B');
  } finally {
    await buildA.stop();
  }
}, 120_000);

afterAll(async () => {
  await buildB?.stop();
  await connection?.close();
  await h?.close();
});

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const at = Date.now();
  const value = await fn();
  return { value, ms: Date.now() - at };
}

describe('plans that ended on a build whose workers are stopped', () => {
  it('ran pinned to build A', async () => {
    for (const { started } of Object.values(plans)) {
      const description = await h.client.workflow.getHandle(started?.workflowId ?? '').describe();
      expect(pinnedVersionOf(description.raw.workflowExecutionInfo?.versioningInfo)).toEqual({
        deploymentName: config.workerDeployment,
        buildId: 'A',
      });
    }
  });

  it('status answers at once with the ended outcome, from the result or the history', async () => {
    const executed = await timed(() => planStatus(h.client, plans.executed.plan.plan_id));
    expect(executed.ms).toBeLessThan(QUICK_MS);
    expect(executed.value).toMatchObject({ stage: 'done', outcome: 'executed', mode: 'testnet' });
    expect(executed.value.execution?.status).toBe('FILLED');
    expect(executed.value.timeline.length).toBeGreaterThan(0);

    const failed = await timed(() => planStatus(h.client, plans.failed.plan.plan_id));
    expect(failed.ms).toBeLessThan(QUICK_MS);
    expect(failed.value.outcome).toBe('failed');
    expect(failed.value.last_error).toBeTruthy();

    const terminated = await timed(() => planStatus(h.client, plans.terminated.plan.plan_id));
    expect(terminated.ms).toBeLessThan(QUICK_MS);
    expect(terminated.value.stage).toBe('blocked');
    expect(terminated.value.closed).toMatchObject({
      status: 'terminated',
      reason: 'test: given up while blocked',
      order_may_be_on_exchange: false,
    });

    // The CLI, as an operator types it: the process's own start included.
    const cli = await timed(() => runCli(['status', plans.executed.plan.plan_id, '--json'], env));
    expect(cli.value.stderr).toBe('');
    expect(cli.value.code).toBe(0);
    expect((JSON.parse(cli.value.stdout) as ChainStatus).outcome).toBe('executed');
    expect(cli.ms).toBeLessThan(10_000);
  });

  it('list, what-if and the retry report answer at once', async () => {
    // `list` shows every plan of the namespace: each of these is found by its symbol (used by no other test).
    for (const [outcome, { plan }] of Object.entries(plans)) {
      const list = await timed(() => runCli(['list', '--symbol', plan.symbol, '--limit', '1000', '--json'], env));
      expect(list.value.code).toBe(0);
      const rows = (JSON.parse(list.value.stdout) as { plans: { plan_id: string; outcome: string }[] }).plans;
      expect(rows.find((row) => row.plan_id === plan.plan_id)?.outcome).toBe(outcome);
      expect(list.ms).toBeLessThan(10_000);
    }

    const whatIf = await timed(() => runCli(['what-if', '--json', '--since', '10m'], env));
    expect(whatIf.value.stderr).toBe('');
    expect(whatIf.value.code).toBe(0);
    expect((JSON.parse(whatIf.value.stdout) as WhatIfReport).plans).toBeGreaterThanOrEqual(2);
    expect(whatIf.ms).toBeLessThan(10_000);

    const ids = Object.values(plans).map(({ plan }) => plan.plan_id);
    const report = await timed(() => reportRetries(h.client, ids, 'retry-after-deploy', { waitMs: 8_000 }));
    expect(report.ms).toBeLessThan(QUICK_MS);
    expect(report.value.unknown).toEqual([]);
    expect(Object.fromEntries(report.value.moved.map((plan) => [plan.plan_id, plan.outcome]))).toEqual({
      [plans.executed.plan.plan_id]: 'executed',
      [plans.failed.plan.plan_id]: 'failed',
      [plans.terminated.plan.plan_id]: 'terminated',
    });
  });

  it("the Web UI shows an ended plan's result, read from its history", async () => {
    // Debian's Chromium, as test/integration/web-ui.test.ts runs it.
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1600, height: 1200 } });
      await page.goto(`${inject('temporalUiUrl')}/namespaces/default/workflows/${plans.executed.started?.workflowId}`);
      // The Result panel: the ChainStatus the workflow returned (its first lines are on screen).
      const shown = await eventually(
        async () => {
          const text = await page.locator('body').innerText();
          return text.includes('"stage": "done"') ? text : undefined;
        },
        20_000,
        "the plan's result in the Web UI",
      );
      expect(shown).toContain(`"plan_id": "${plans.executed.plan.plan_id}"`);
      expect(shown).toMatch(/COMPLETED/);
      expect(shown).toMatch(/Build ID\s+A\s/);
    } finally {
      await browser.close();
    }
  });

  it('retry resets the failed plan onto build B: its new run is pinned to B, runs there and executes', async () => {
    const { plan, started } = plans.failed;
    await h.redis.hset(h.keys.position('APTUSDT'), 'ledger_amount', '1');
    const run = await runCli(['retry', plan.plan_id, '--by', 'ops', '--json'], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ plan_id: plan.plan_id, reset: true, build_id: 'B' });

    const handle = h.client.workflow.getHandle(started?.workflowId ?? '');
    expect(((await handle.result()) as ChainStatus).outcome).toBe('executed');
    // Pinned to B by B's worker, with no override left on the run (it may move on when it continues as new).
    const { versioningInfo } = (await handle.describe()).raw.workflowExecutionInfo ?? {};
    expect(pinnedVersionOf(versioningInfo)?.buildId).toBe('B');
    expect(versioningInfo?.versioningOverride ?? undefined).toBeUndefined();
    // The reset sent the new run's first workflow task to B, and B's worker completed every one: A's are stopped.
    const history = await handle.fetchHistory();
    const override = history.events?.find((event) => event.workflowExecutionOptionsUpdatedEventAttributes)
      ?.workflowExecutionOptionsUpdatedEventAttributes?.versioningOverride;
    expect(override?.oneTime?.targetDeploymentVersion).toEqual({
      deploymentName: config.workerDeployment,
      buildId: 'B',
    });
    const builds = new Set(
      (history.events ?? [])
        .filter((event) => event.eventType === temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
        .map((event) => event.workflowTaskCompletedEventAttributes?.deploymentVersion?.buildId),
    );
    expect([...builds]).toEqual(['B']);

    const reset = (await auditOf(h, plan.plan_id)).filter(
      ([layer, decision]) => layer === 'operator' && decision === 'reset',
    );
    expect(reset).toHaveLength(1);
    expect(reset[0]?.[2]).toBe(
      `retry of a failed plan by ops onto build B of ${config.workerDeployment} (it ran on build A, not current)`,
    );
  });

  it('retry of a plan that failed on the current build B resets it on B, and says so', async () => {
    await setPositions(h, 'OPUSDT', '1', 'garbage');
    const plan = makePlan({ symbol: 'OPUSDT', qty: '1' });
    const { handle } = await startPlan(h.client, config, plan);
    expect((await handle.result()).outcome).toBe('failed');
    await h.redis.hset(h.keys.position('OPUSDT'), 'ledger_amount', '1');
    const run = await runCli(['retry', plan.plan_id, '--by', 'ops'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(`^plan ${plan.plan_id} runs again from its start \\(reset, run [0-9a-f-]+, on build B\\)\\n$`),
    );
    const rerun = h.client.workflow.getHandle<typeof permitChain>(handle.workflowId);
    expect((await rerun.result()).outcome).toBe('executed');
    expect(await auditOf(h, plan.plan_id)).toContainEqual([
      'operator',
      'reset',
      `retry of a failed plan by ops on its build B of ${config.workerDeployment}`,
    ]);
  });
});
