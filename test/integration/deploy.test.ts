import { randomBytes, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { type WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPaperExchange } from '../../activities/exchange/paper';
import type { ExchangePort } from '../../activities/exchange/port';
import { DeployRefused, deployBuild, type DeploymentReport, type DeployReport } from '../../client/deployments';
import { startPlan, type StartedPlan } from '../../client/plans';
import { approveSignal, retrySignal, statusQuery, wakeSignal } from '../../contract/messages';
import { OPERATOR_OPERATION_WORKFLOW, operationWorkflowId } from '../../contract/operations';
import type { ChainConfig } from '../../lib/config';
import { connectWorkerTemporal, createChainWorker } from '../../workers/worker';
import { runCli } from '../../scripts/stack/cli-runner';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  setPositions,
  testApprovers,
  testConfig,
  testEnv,
  type ChainHarness,
  waitForStage,
} from '../helpers';

const { EventType } = temporal.api.enums.v1;

let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(testConfig());
});
afterAll(() => h.close());

/** The event types a plan's current run recorded after its last `wake` signal, once a workflow task has answered it. */
async function eventsAfterWake(handle: WorkflowHandle): Promise<temporal.api.enums.v1.EventType[]> {
  return eventually(
    async () => {
      const events = (await handle.fetchHistory()).events ?? [];
      const signals = events.map((e) => e.workflowExecutionSignaledEventAttributes?.signalName);
      const wake = signals.lastIndexOf(wakeSignal.name);
      if (wake < 0) return undefined;
      const after = events.slice(wake + 1).map((e) => e.eventType ?? EventType.EVENT_TYPE_UNSPECIFIED);
      return after.includes(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) ? after : undefined;
    },
    10_000,
    'a workflow task after the wake',
  );
}

describe('the wake signal', () => {
  it('is no look: a blocked plan with no new build to move to stays at rest, its timeline and history unchanged', async () => {
    await setPositions(h, 'LTCUSDT', '3', '1');
    const plan = makePlan({ symbol: 'LTCUSDT', qty: '3' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      const blocked = await waitForStage(h, workflowId, 'blocked');
      await handle.signal(wakeSignal);
      const after = await eventsAfterWake(handle);
      // Only the workflow task that saw the signal: no P3.3 look (a local activity's marker), no activity, no timer.
      expect(after).not.toContain(EventType.EVENT_TYPE_MARKER_RECORDED);
      expect(after).not.toContain(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
      expect(after).not.toContain(EventType.EVENT_TYPE_TIMER_STARTED);
      expect(after).not.toContain(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW);
      const status = await handle.query(statusQuery);
      expect(status.stage).toBe('blocked');
      expect(status.timeline).toEqual(blocked.timeline);
      expect(status.p33?.evaluated_at).toBe(blocked.p33?.evaluated_at);
      await handle.terminate('test over');
    });
  });
});

/** A promise and the function that resolves it: where a test's exchange double holds an order. */
function gate(): { passed: Promise<void>; open: () => void } {
  let open!: () => void;
  const passed = new Promise<void>((resolve) => (open = resolve));
  return { passed, open };
}

/** One build's worker: versioned, its build id given, on the deployment's task queue, over the harness's Redis. */
interface Build {
  id: string;
  /** The plans whose orders this build's Execute placed. */
  placed: string[];
  stop(): Promise<void>;
}

/** A test's environment: versioned, in a Worker Deployment and on a task queue of its own, on the file's Redis keys. */
function versionedEnv(upgrade: boolean): Record<string, string> {
  return testEnv({
    KEY_PREFIX: h.config.keyPrefix,
    WORKER_VERSIONING: 'true',
    WORKER_DEPLOYMENT: `pc-${randomBytes(4).toString('hex')}`,
    UPGRADE_ON_CONTINUE_AS_NEW: String(upgrade),
  });
}

/**
 * Starts a versioned worker of build `id` (each on a connection of its own, as two processes would be) and waits until
 * the server knows its version. `hold(planId)`: a promise its Execute waits on after the order filled.
 */
async function startBuild(
  config: ChainConfig,
  id: string,
  hold?: (planId: string) => Promise<void> | undefined,
): Promise<Build> {
  const placed: string[] = [];
  const paper = createPaperExchange(h.redis, h.keys, Date.now);
  const exchange: ExchangePort = {
    ...paper,
    async placeMarketOrder(request) {
      const order = await paper.placeMarketOrder(request);
      placed.push(request.clientOrderId);
      await hold?.(request.clientOrderId);
      return order;
    },
  };
  const connection: NativeConnection = await connectWorkerTemporal(config);
  const worker: Worker = await createChainWorker({
    config,
    redis: h.redis,
    client: h.client,
    connection,
    exchange,
    buildId: id,
    workflowBundle: { codePath: inject('workflowBundlePath') },
  });
  const running = worker.run();
  await eventually(
    () =>
      h.client.workflowService
        .describeWorkerDeploymentVersion({
          namespace: config.temporalNamespace,
          deploymentVersion: { deploymentName: config.workerDeployment, buildId: id },
        })
        .then(
          () => true,
          () => undefined,
        ),
    20_000,
    `build ${id} to be a version of ${config.workerDeployment}`,
  );
  return {
    id,
    placed,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
      await connection.close();
    },
  };
}

/** The build a plan's current run is pinned to (its versioning info), '' while it has none. */
async function buildOf(handle: WorkflowHandle): Promise<string> {
  const described = await h.client.workflow.getHandle(handle.workflowId).describe();
  return described.raw.workflowExecutionInfo?.versioningInfo?.deploymentVersion?.buildId ?? '';
}

/** How many runs of a plan ended by continuing as new. */
async function continuedRuns(workflowId: string): Promise<number> {
  const { executions } = await h.client.workflowService.listWorkflowExecutions({
    namespace: h.config.temporalNamespace,
    query: `WorkflowId = "${workflowId}" AND ExecutionStatus = "ContinuedAsNew"`,
  });
  return executions.length;
}

describe('a deploy while plans run (two builds, one Redis)', () => {
  it('leaves the plan in flight on A, moves the blocked plans onto B, which executes them once the ledger is fixed', async () => {
    const env = versionedEnv(true);
    const config = testConfig(env);
    const stamp = randomBytes(3).toString('hex');
    const [idA, idB] = [`a${stamp}`, `b${stamp}`];
    const inFlight = makePlan({ symbol: 'BNBUSDT', qty: '1' });
    const waiting = Array.from({ length: 5 }, () => makePlan({ symbol: 'XRPUSDT', qty: '1' }));
    await setPositions(h, 'BNBUSDT', '1', '1');
    await setPositions(h, 'XRPUSDT', '5', '1');
    const filled = gate();
    const release = gate();
    const a = await startBuild(config, idA, (planId) => {
      if (planId !== inFlight.plan_id) return undefined;
      filled.open();
      return release.passed;
    });
    let b: Build | undefined;
    try {
      // No worker of B has polled yet: refused, naming the build, nothing changed.
      await expect(deployBuild(h.client, config, idB, { identity: 'test' })).rejects.toThrow(DeployRefused);
      const unknown = await runCli(['deploy', idB], env);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain(`build ${idB} is not a version of deployment ${config.workerDeployment}`);
      await deployBuild(h.client, config, idA, { identity: 'test' });

      const flight: StartedPlan = await startPlan(h.client, config, inFlight);
      await filled.passed; // its order is on the exchange; Execute holds before it records the fill
      const blocked: StartedPlan[] = [];
      for (const plan of waiting) blocked.push(await startPlan(h.client, config, plan));
      for (const plan of blocked) await waitForStage({ client: h.client }, plan.workflowId, 'blocked');
      for (const plan of [flight, ...blocked]) expect(await buildOf(plan.handle)).toBe(idA);

      b = await startBuild(config, idB);
      const deploy = await runCli(['deploy', idB, '--by', 'ops', '--json'], env);
      expect(deploy.stderr).toBe('');
      expect(deploy.code).toBe(0);
      const report = JSON.parse(deploy.stdout) as DeployReport & { audit: { audited?: string } };
      expect(report.current_build_id).toBe(idB);
      expect(report.deployed).toMatchObject({ build_id: idB, as: 'current', previous_current: idA });
      expect(report.woken).toBe(5);
      // Counted after the wake: the woken plans may have moved onto B by then, the plan in flight has not.
      const onA = report.versions.find((v) => v.build_id === idA);
      expect(onA?.status).toBe('draining');
      expect(onA?.running_plans).toBeGreaterThanOrEqual(1);
      expect(onA?.running_plans).toBeLessThanOrEqual(6);
      expect(report.audit.audited).toBe(
        `by ops: build ${idB} current in deployment ${config.workerDeployment} (set by permit-chain deploy by ops (${hostname()}))`,
      );
      expect(await auditOf(h, '-')).toContainEqual(['operator', 'deployed', report.audit.audited]);

      // Woken, each blocked plan continued as new onto B, still blocked, with what it did on A carried.
      for (const plan of blocked) {
        await eventually(
          async () => ((await buildOf(plan.handle)) === idB ? true : undefined),
          20_000,
          `plan ${plan.planId} on build ${idB}`,
        );
        const status = await plan.handle.query(statusQuery);
        expect(status.stage).toBe('blocked');
        expect(status.attempts).toBe(1);
        expect(status.timeline.map((t) => t.detail)).toContain('a new build is current: continued as new onto it');
        expect(await continuedRuns(plan.workflowId)).toBe(1);
      }
      // The plan in flight stays on A, mid-Execute, and finishes there.
      expect(await buildOf(flight.handle)).toBe(idA);
      release.open();
      expect((await flight.handle.result()).outcome).toBe('executed');
      expect(a.placed).toEqual([inFlight.plan_id]);
      expect(await buildOf(flight.handle)).toBe(idA);

      // The ledger fixed and the plans retried (no position watcher runs here): they execute on B.
      await h.redis.hset(h.keys.position('XRPUSDT'), 'ledger_amount', '5');
      for (const plan of blocked) await plan.handle.signal(retrySignal, { by: 'ops' });
      const finals = await Promise.all(blocked.map((plan) => plan.handle.result()));
      expect(finals.map((f) => f.outcome)).toEqual(finals.map(() => 'executed'));
      expect([...b.placed].sort()).toEqual(waiting.map((p) => p.plan_id).sort());
      expect(await h.redis.hget(h.keys.position('XRPUSDT'), 'ledger_amount')).toBe('0');
      expect(await h.redis.hget(h.keys.paperPosition('XRPUSDT'), 'amount')).toBe('0');

      // A runs nothing any more: the report says so, and, once the server has checked, that it is drained.
      const drained = await eventually(
        async () => {
          const run = await runCli(['deploy', 'status', '--json'], env);
          const now = JSON.parse(run.stdout) as DeploymentReport;
          const versionA = now.versions.find((v) => v.build_id === idA);
          return versionA?.status === 'drained' ? now : undefined;
        },
        60_000,
        `build ${idA} drained`,
      );
      expect(drained.versions.find((v) => v.build_id === idA)).toMatchObject({ running_plans: 0 });
      expect(drained.versions.find((v) => v.build_id === idB)).toMatchObject({ status: 'current', running_plans: 0 });
      const text = await runCli(['deploy', 'status'], env);
      expect(text.stdout).toContain(`build ${idA}: drained, safe to stop its workers`);
      expect(text.stdout).toContain(`build ${idB}: current, 0 plans running on it`);
    } finally {
      release.open();
      await b?.stop();
      await a.stop();
    }
  }, 240_000);

  it('with UPGRADE_ON_CONTINUE_AS_NEW off, a woken blocked plan stays on its build and executes there', async () => {
    const env = versionedEnv(false);
    const config = testConfig(env);
    const stamp = randomBytes(3).toString('hex');
    const plan = makePlan({ symbol: 'DOTUSDT', qty: '2' });
    await setPositions(h, 'DOTUSDT', '2', '0');
    // Before any worker of it polls, the deployment has nothing to report: one line naming it and the fix, exit 2.
    const none = await runCli(['deploy', 'status'], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toBe(
      `permit-chain: deployment ${config.workerDeployment} has no versions: no versioned worker ` +
        `(WORKER_VERSIONING=true) has polled namespace default as WORKER_DEPLOYMENT=${config.workerDeployment}\n`,
    );
    const a = await startBuild(config, `a${stamp}`);
    let b: Build | undefined;
    try {
      await deployBuild(h.client, config, a.id, { identity: 'test' });
      const started = await startPlan(h.client, config, plan);
      await waitForStage({ client: h.client }, started.workflowId, 'blocked');
      b = await startBuild(config, `b${stamp}`);
      const report = await deployBuild(h.client, config, b.id, { identity: 'test' });
      expect(report.woken).toBe(1);
      // The wake was taken (a workflow task after it, in the run it was sent to: a plan that moved has a newer run),
      // and the plan did not move.
      await eventsAfterWake(started.handle);
      expect(await buildOf(started.handle)).toBe(a.id);
      expect(await continuedRuns(started.workflowId)).toBe(0);
      await h.redis.hset(h.keys.position('DOTUSDT'), 'ledger_amount', '2');
      await started.handle.signal(retrySignal, { by: 'ops' });
      expect((await started.handle.result()).outcome).toBe('executed');
      expect(a.placed).toEqual([plan.plan_id]);
      expect(b.placed).toEqual([]);
      // An operation can come from anyone who reaches Temporal: the worker checks it against the server and the plan.
      const refusal = (request: Record<string, string>) =>
        h.client.workflow
          .execute(OPERATOR_OPERATION_WORKFLOW, {
            taskQueue: config.taskQueue,
            workflowId: operationWorkflowId(randomUUID()),
            args: [request],
          })
          .then(
            () => 'performed',
            (err: unknown) => {
              const cause = (err as WorkflowFailedError).cause?.cause;
              return cause instanceof Error ? cause.message : String(cause);
            },
          );
      // The deploy's audit names the build the server has current, and who changed the routing as the server says.
      expect(await refusal({ operation: 'deployed', build_id: a.id, by: 'mallory' })).toBe(
        `build ${a.id} is neither current nor ramping in deployment ${config.workerDeployment} (current ${b.id})`,
      );
      expect(await refusal({ operation: 'deployed', build_id: b.id, by: 'mallory' })).toBe(
        "the deployment's routing was last changed by test, not by permit-chain deploy by mallory",
      );
      // Only a plan that ended failed runs again, whoever asks.
      expect(await refusal({ operation: 'reset', plan_id: plan.plan_id, by: 'mallory' })).toBe(
        `plan ${plan.plan_id} ended executed: only a failed plan runs again`,
      );
      expect(await auditOf(h, plan.plan_id)).not.toContainEqual(expect.arrayContaining(['reset']));
      expect((await auditOf(h, '-')).filter(([, , reason]) => reason?.includes('mallory'))).toEqual([]);
    } finally {
      await b?.stop();
      await a.stop();
    }
  }, 120_000);

  it('moves a plan awaiting approval onto B after a ramp and a deploy; the approval shown on A is signed and executed on B', async () => {
    const approvers = testApprovers('alice');
    const env = {
      ...versionedEnv(true),
      TRADING_MODE: 'production',
      APPROVERS: 'alice',
      APPROVER_KEYS_DIR: approvers.dir,
    };
    const config = testConfig(env);
    const stamp = randomBytes(3).toString('hex');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '1' });
    await setPositions(h, 'SOLUSDT', '1', '1');
    const a = await startBuild(config, `a${stamp}`);
    let b: Build | undefined;
    try {
      await deployBuild(h.client, config, a.id, { identity: 'test' });
      const started = await startPlan(h.client, config, plan);
      const before = await waitForStage({ client: h.client }, started.workflowId, 'awaiting_approval');
      b = await startBuild(config, `b${stamp}`);

      // A ramp sends new plans to B; the plans running stay where they are, and none is woken.
      const ramp = await runCli(['deploy', b.id, '--ramp', '50', '--by', 'ops', '--json'], env);
      expect(ramp.code).toBe(0);
      const ramped = JSON.parse(ramp.stdout) as DeployReport & { audit: { audited?: string } };
      expect(ramped).toMatchObject({
        current_build_id: a.id,
        ramping_build_id: b.id,
        ramping_percentage: 50,
        woken: 0,
        deployed: { as: 'ramping', ramp_percentage: 50 },
      });
      expect(ramped.audit.audited).toMatch(
        new RegExp(
          `^by ops: build ${b.id} ramping at 50% \\(current ${a.id}\\) in deployment ${config.workerDeployment}`,
        ),
      );
      expect(await buildOf(started.handle)).toBe(a.id);

      const report = await deployBuild(h.client, config, b.id, { identity: 'test' });
      expect(report.woken).toBe(1);
      const bId = b.id;
      await eventually(
        async () => ((await buildOf(started.handle)) === bId ? true : undefined),
        20_000,
        `the plan on build ${bId}`,
      );
      const moved = await started.handle.query(statusQuery);
      expect(moved.stage).toBe('awaiting_approval');
      expect(moved.awaiting).toEqual(before.awaiting);
      expect(moved.timeline.map((t) => t.detail)).toContain('a new build is current: continued as new onto it');
      if (!moved.awaiting) throw new Error('the moved plan shows nothing to approve');
      await started.handle.signal(approveSignal, approvers.sign(plan.plan_id, 'alice', moved.awaiting));
      const final = await started.handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.governor).toMatchObject({ granted: true, approved_by: 'alice' });
      expect(b.placed).toEqual([plan.plan_id]);
      expect(a.placed).toEqual([]);
    } finally {
      await b?.stop();
      await a.stop();
    }
  }, 120_000);
});
