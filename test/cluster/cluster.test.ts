/**
 * The chain as it is deployed, on a real Temporal cluster (the server binary on PostgreSQL, `scripts/cluster.sh`),
 * with two worker processes and two intake processes, fed through the upstream stream: the desk's incident and 300
 * plans on 20 symbols, one worker and one intake SIGKILLed mid-run and started again. Nothing may be lost or
 * duplicated. The workers run versioned (WORKER_VERSIONING), as in docker-compose.yml: their build is made the
 * deployment's current version with the command of the runbook before any plan arrives, and every plan is pinned to
 * it.
 *
 * Then a deploy on the same cluster and Redis: a second build (the checkout's sources with one line of an activity
 * changed: scripts/stack/second-build.ts) started beside the first while 60 plans are blocked by stale ledgers and
 * others wait in flight for a rate slot, made current with `permit-chain deploy`. The plans in flight finish on the
 * first build, the blocked ones continue as new onto the second when woken and execute there once reconciled, and the
 * first build, its workers stopped, still answers for its ended plans and is reported drained (the server's drainage
 * timings lowered for the test: test/cluster/dynamicconfig.yaml). The second test goes on from the first's state.
 *
 * Run by `npm run test:cluster` (not by `npm test`: it builds and starts a cluster); logs of every process in
 * test-results/cluster/.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeploymentReport, DeployReport } from '../../client/deployments';
import { redisKeys } from '../../contract/keys';
import { PERMIT_CHAIN_WORKFLOW, planWorkflowId, statusQuery } from '../../contract/messages';
import type { ChainStatus } from '../../contract/types';
import { Dec } from '../../lib/decimal';
import { parsePlan } from '../../lib/plan';
import {
  PROJECT_ROOT,
  ensureServersInstalled,
  freePort,
  startRedis,
  temporalCliExecutable,
  type RunningRedis,
} from '../../cli/servers';
import { runCli } from '../../scripts/stack/cli-runner';
import { eventually } from '../helpers';
import { intakeSpec, workerSpec } from '../../scripts/stack/chain';
import { startCluster, type RunningCluster } from '../../scripts/stack/cluster';
import {
  findViolations,
  inLanes,
  readSnapshot,
  takeOvers,
  type ExpectedPlan,
  type Positions,
} from '../../scripts/stack/invariants';
import { ProcessGroup } from '../../scripts/stack/processes';
import { makeSecondBuild } from '../../scripts/stack/second-build';

const PLANS = 300;
const SYMBOLS = 20;
/** Every 30th plan asks for more than GOVERNOR_MAX_QTY: designed to be denied by the Governor. */
const MAX_QTY = '5';
/** Each load symbol starts long this much on the exchange and in the ledger; reduce-only sells stay well inside. */
const START_AMOUNT = '50';
/** Plans fed to the exit.plan stream per second: slow enough that the kill lands while plans are still arriving. */
const FEED_PER_S = 25;
/**
 * The worker and the intake are killed once this many load plans have been published by Apply, or, on a machine so
 * busy that the chain lags far behind, once this many have been fed: either way with plans in flight and arriving.
 */
const KILL_AFTER_APPLIED = 60;
const KILL_AFTER_FED = 200;
/** How long the killed processes stay dead. */
const DEAD_FOR_MS = 3_000;
const INCIDENT = { symbol: 'BTCUSDT', exchange: '0.062', staleLedger: '0.002' };

/**
 * Every worker's GOVERNOR_RATE_LIMIT. The first test never reaches it (15 plans a symbol); in the second, the plans
 * of HELD_SYMBOL beyond it wait in flight, on build A, for their slot while build B is deployed.
 */
const RATE_LIMIT = { count: 16, windowS: 40 };
const HELD_SYMBOL = 'DPHELDUSDT';
const HELD_PLANS = RATE_LIMIT.count + 4;
/** Symbols whose ledger is stale when the second build is deployed: their plans blocked by P3.3 until reconciled. */
const STALE_SYMBOLS = ['DPST0USDT', 'DPST1USDT', 'DPST2USDT', 'DPST3USDT', 'DPST4USDT'];
const BLOCKED_PER_SYMBOL = 12;
const STALE = { exchange: '10', ledger: '9' };
/**
 * Build B: the checkout's sources with this one line of an activity changed (scripts/stack/second-build.ts). Its Execute
 * says on the worker's output which plan it runs for, so the test sees build B's own code execute each plan.
 */
const BUILD_B_CHANGE = {
  file: 'activities/index.ts',
  from: 'executePlan: heartbeating((plan: Parameters<typeof execute.executePlan>[0]) => execute.executePlan(plan)),',
  to:
    'executePlan: heartbeating((plan: Parameters<typeof execute.executePlan>[0]) => { ' +
    "console.log('build B: Execute for plan ' + plan.plan_id); return execute.executePlan(plan); }),",
};
const BUILD_B_EXECUTE = /^build B: Execute for plan (\S+)$/gm;

const LOG_DIR = join(PROJECT_ROOT, 'test-results', 'cluster');
// The logs of the last run stay for reading (test-results/ is ignored by git).
rmSync(LOG_DIR, { recursive: true, force: true });
const runDir = mkdtempSync(join(tmpdir(), 'permit-chain-cluster-'));
const group = new ProcessGroup(LOG_DIR);
let cluster: RunningCluster | undefined;
let redisServer: RunningRedis | undefined;
let redis: Redis;
let client: Client;
let env: Record<string, string>;
const keys = redisKeys('quantum');

const symbolOf = (i: number) => `CL${String(i % SYMBOLS).padStart(2, '0')}USDT`;

/** The i-th load plan as an upstream producer writes it (every field a string, no plan id), and its design. */
function loadPlan(i: number, run: string): { fields: Record<string, string>; outcome: ExpectedPlan['outcome'] } {
  const denied = i % 30 === 29;
  const side = !denied && i % 3 === 0 ? 'BUY' : 'SELL';
  // Eight decimals, all different: exact sums, or the exchange and the ledger would drift apart.
  const qty = denied ? '7' : `0.${String(((i * 7919) % 99_999_999) + 1).padStart(8, '0')}`;
  const fields = {
    action: 'EXECUTE',
    symbol: symbolOf(i),
    side,
    qty,
    reduce_only: side === 'SELL' ? 'true' : 'false',
    source: 'cluster-test',
    reason: `load plan ${i} of run ${run}`,
    created_at: String(Date.now()),
  };
  return { fields, outcome: denied ? 'denied' : 'executed' };
}

function xaddFields(fields: Record<string, string>): string[] {
  return Object.entries(fields).flat();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The Worker Deployment the workers poll as (WORKER_DEPLOYMENT). */
const DEPLOYMENT = 'permit-chain';
/** The checkout's build, made current by the first test; the second deploys another build beside it. */
let buildA: string | undefined;
/** Every plan of the run and the positions each symbol was counted from: the second test checks them all. */
const runPlans: ExpectedPlan[] = [];
const runBaseline = new Map<string, Positions>();

/**
 * Makes `buildId` the deployment's current version with the runbook's command ("Deploying a new build"), once its
 * workers have registered it by polling: until then the server refuses it. Returns how many tries it took.
 */
async function setCurrentVersion(address: string, buildId: string): Promise<number> {
  const cli = temporalCliExecutable();
  if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
  const args = ['worker', 'deployment', 'set-current-version', '--deployment-name', DEPLOYMENT, '--build-id', buildId];
  let last = '';
  for (let tries = 1; tries <= 60; tries++) {
    const run = spawnSync(cli.path, [...args, '--yes', '--address', address], { encoding: 'utf8' });
    if (run.status === 0) return tries;
    last = `${run.stdout}${run.stderr}`.slice(0, 500);
    await sleep(1000);
  }
  throw new Error(`set-current-version ${DEPLOYMENT} ${buildId} kept failing: ${last}`);
}

beforeAll(async () => {
  // As `npm test` does: scripts/setup.sh when redis-server or the Temporal CLI (the script's health check) is missing.
  ensureServersInstalled({ forTests: false });
  const clusterLog = join(group.logDir, 'cluster.log');
  cluster = await startCluster(runDir, (text) => appendFileSync(clusterLog, text), {
    dynamicConfigExtra: join(__dirname, 'dynamicconfig.yaml'),
  });
  // Keyspace notifications on hashes and generic commands: the workers' position watchers wake blocked plans on them.
  redisServer = await startRedis({ port: await freePort(), keyspaceEvents: 'Kgh' });
  env = {
    REDIS_URL: redisServer.url,
    TEMPORAL_ADDRESS: cluster.address,
    TEMPORAL_NAMESPACE: 'default',
    TASK_QUEUE: 'permit-chain',
    KEY_PREFIX: 'quantum',
    TRADING_MODE: 'testnet',
    GOVERNOR_MAX_QTY: MAX_QTY,
    WORKER_DEPLOYMENT: DEPLOYMENT,
    WORKER_VERSIONING: 'true',
    // As docker-compose.yml: a waiting plan told of a new current build continues as new onto it.
    UPGRADE_ON_CONTINUE_AS_NEW: 'true',
    GOVERNOR_RATE_LIMIT: `${RATE_LIMIT.count}/${RATE_LIMIT.windowS}s`,
  };
  redis = new Redis(redisServer.url);
  client = new Client({ connection: await Connection.connect({ address: cluster.address }) });
}, 300_000);

afterAll(async () => {
  await group.stopAll();
  redis?.disconnect();
  await client?.connection.close().catch(() => undefined);
  await redisServer?.stop();
  await cluster?.stop();
  rmSync(runDir, { recursive: true, force: true });
}, 120_000);

/** A plan of the deploy's test: a reduce-only SELL on `symbol`, its quantity different for each `i`. */
function deployPlan(symbol: string, i: number, run: string): Record<string, string> {
  return {
    action: 'EXECUTE',
    symbol,
    side: 'SELL',
    qty: `0.0${String(((i * 7919) % 9_999_999) + 1).padStart(7, '0')}`,
    reduce_only: 'true',
    source: 'cluster-test',
    reason: `deploy plan ${i} of run ${run}`,
    created_at: String(Date.now()),
  };
}

const statusOf = (planId: string) =>
  client.workflow
    .getHandle(planWorkflowId(planId))
    .query(statusQuery)
    .catch(() => undefined);

/** A plan's run (the latest, or `runId`): its id, state, and the build it is pinned to. */
async function runOf(planId: string, runId?: string) {
  const described = await client.workflow.getHandle(planWorkflowId(planId), runId).describe();
  const versioning = described.raw.workflowExecutionInfo?.versioningInfo;
  return {
    runId: described.runId,
    status: described.status.name,
    buildId: versioning?.deploymentVersion?.buildId ?? undefined,
    behavior: versioning?.behavior ?? undefined,
  };
}

/**
 * What a plan's latest run did where, from its history: the build of every workflow task it completed, and the
 * identity (`pid@host`, the SDK's default) and time of every start of its Execute activity.
 */
async function whereItRan(planId: string) {
  const { events } = await client.workflow.getHandle(planWorkflowId(planId)).fetchHistory();
  const all = events ?? [];
  const executeScheduled = new Set(
    all
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'executePlan')
      .map((e) => String(e.eventId)),
  );
  return {
    taskBuilds: new Set(
      all.flatMap((e) => {
        const attributes = e.workflowTaskCompletedEventAttributes;
        return attributes ? [attributes.deploymentVersion?.buildId ?? '(none)'] : [];
      }),
    ),
    executeStarts: all
      .filter((e) => executeScheduled.has(String(e.activityTaskStartedEventAttributes?.scheduledEventId)))
      .map((e) => ({
        identity: e.activityTaskStartedEventAttributes?.identity ?? '',
        at: Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6),
      })),
  };
}

describe('the chain on a PostgreSQL-backed Temporal cluster', () => {
  it('runs the incident and 300 plans on 20 symbols through two workers and two intakes, a worker and an intake SIGKILLed mid-run, and loses and duplicates nothing', async () => {
    const t0 = Date.now();
    const at = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
    const run = String(t0);

    // The project's own command registers the search attributes in the cluster's namespace.
    const registered = await runCli(['register-search-attributes'], env);
    expect(registered.code, registered.stderr).toBe(0);
    expect(registered.stdout).toMatch(/registered PlanId, Symbol, ChainStage, ChainOutcome, TradingMode in default/);

    // Positions: 20 load symbols long START_AMOUNT on both sides; the incident's BTCUSDT as the seed reported it.
    const symbols = Array.from({ length: SYMBOLS }, (_, i) => symbolOf(i));
    for (const symbol of symbols) {
      await redis.hset(keys.paperPosition(symbol), 'amount', START_AMOUNT);
      await redis.hset(keys.position(symbol), 'ledger_amount', START_AMOUNT);
    }
    await redis.hset(keys.paperPosition(INCIDENT.symbol), 'amount', INCIDENT.exchange);
    await redis.hset(keys.position(INCIDENT.symbol), 'ledger_amount', INCIDENT.staleLedger);

    const [workerA, , , intakeB] = await Promise.all([
      group.start(workerSpec('worker-a1', env)),
      group.start(workerSpec('worker-a2', env)),
      group.start(intakeSpec('intake-a', env)),
      group.start(intakeSpec('intake-b', env)),
    ]);
    if (!workerA || !intakeB) throw new Error('processes did not start');
    // A versioned deployment gets no plans until a version is current: the build the workers run, as
    // `permit-chain --version` names it, made current as the runbook says.
    const version = await runCli(['--version', '--json'], env);
    expect(version.code, version.stderr).toBe(0);
    const buildId = (JSON.parse(version.stdout) as { build_id: string }).build_id;
    expect(buildId).toMatch(/^[0-9a-f]{16}$/);
    buildA = buildId;
    expect(workerA.output()).toContain(`worker: build ${buildId} of deployment ${DEPLOYMENT}, versioned`);
    const currentAfter = await setCurrentVersion(cluster?.address ?? '', buildId);
    const startedAt = at();

    // The incident, through the upstream stream: a reduce-only SELL 0.062 that P3.3 must block.
    const incidentFields = {
      action: 'EXECUTE',
      symbol: INCIDENT.symbol,
      side: 'SELL',
      qty: INCIDENT.exchange,
      reduce_only: 'true',
      source: 'exit-monitor',
      reason: 'exit monitor: close position',
      created_at: String(Date.now()),
    };
    const incidentId = parsePlan(incidentFields).plan_id;
    await redis.xadd(keys.exitPlanStream, '*', ...xaddFields(incidentFields));
    const incident = client.workflow.getHandle(planWorkflowId(incidentId));
    const blocked = await eventually(
      async () => {
        const status = await incident.query(statusQuery).catch(() => undefined);
        return status?.stage === 'blocked' ? status : undefined;
      },
      60_000,
      'the incident plan blocked',
    );
    expect(blocked.p33).toMatchObject({
      allow: false,
      reason: 'reconcile_required_qty_mismatch',
      exchange_amount: INCIDENT.exchange,
      ledger_amount: INCIDENT.staleLedger,
    });
    expect(await redis.exists(keys.paperOrder(incidentId))).toBe(0);

    // The load: 300 plans fed at FEED_PER_S while the chain runs.
    const plans: ExpectedPlan[] = [{ planId: incidentId, symbol: INCIDENT.symbol, outcome: 'executed' }];
    let fed = 0;
    const feeding = (async () => {
      for (let i = 0; i < PLANS; i++) {
        const { fields, outcome } = loadPlan(i, run);
        plans.push({ planId: parsePlan(fields).plan_id, symbol: fields.symbol ?? '', outcome });
        await redis.xadd(keys.exitPlanStream, '*', ...xaddFields(fields));
        fed += 1;
        await sleep(1000 / FEED_PER_S);
      }
    })();
    const feedingDone = feeding.then(() => at());

    // Mid-run: SIGKILL one worker and one intake while plans are in flight and still arriving.
    await eventually(
      async () =>
        (await redis.xlen(keys.applyStream)) >= 1 + KILL_AFTER_APPLIED || fed >= KILL_AFTER_FED ? true : undefined,
      120_000,
      `${KILL_AFTER_APPLIED} load plans published`,
    );
    const killedAt = Date.now();
    const [workerExit, intakeExit] = await Promise.all([workerA.kill(), intakeB.kill()]);
    const inFlight = {
      fed,
      published: (await redis.xlen(keys.applyStream)) - 1,
      running: (
        await client.workflow.count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus = "Running"`)
      ).count,
    };
    expect(workerExit.signal).toBe('SIGKILL');
    expect(intakeExit.signal).toBe('SIGKILL');
    expect(inFlight.fed).toBeLessThan(PLANS);
    // The incident, blocked, at least; a load plan takes tens of milliseconds, so few or none of them may be running
    // at the kill: the feed still going (above) is what makes it mid-run.
    expect(inFlight.running).toBeGreaterThanOrEqual(1);

    // While they are dead, the operator fixes the incident's ledger (the one-command ledger fix).
    await redis.hset(keys.position(INCIDENT.symbol), 'ledger_amount', INCIDENT.exchange);
    await sleep(DEAD_FOR_MS);
    await Promise.all([workerA.start(), intakeB.start()]);
    const backMs = Date.now() - killedAt;

    await feeding;
    const allEnded = await eventually(
      async () => {
        const total = await client.workflow.count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`);
        const running = await client.workflow.count(
          `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus = "Running"`,
        );
        return total.count === PLANS + 1 && running.count === 0 ? Date.now() : undefined;
      },
      240_000,
      'every plan ended',
    );

    // The checks, as an operator would make them: Temporal's outcomes, the Apply stream, the exchange's orders, the
    // two positions of every symbol, the intake's consumer group.
    const baseline = new Map<string, Positions>(
      symbols.map((symbol) => [symbol, { exchange: START_AMOUNT, ledger: START_AMOUNT }]),
    );
    // The incident's symbol is counted from the operator's fix: both sides 0.062, then the fill.
    baseline.set(INCIDENT.symbol, { exchange: INCIDENT.exchange, ledger: INCIDENT.exchange });
    const snapshot = await readSnapshot({ client, redis, keys }, plans, [...baseline.keys()]);
    expect(findViolations(plans, baseline, snapshot)).toEqual([]);

    const incidentEnd = (await incident.result()) as ChainStatus;
    expect(incidentEnd.outcome).toBe('executed');
    // Pinned to the build that started it: a later build would never run it.
    const versioning = (await incident.describe()).raw.workflowExecutionInfo?.versioningInfo;
    expect(versioning?.behavior).toBe(temporal.api.enums.v1.VersioningBehavior.VERSIONING_BEHAVIOR_PINNED);
    expect(versioning?.deploymentVersion).toMatchObject({ deploymentName: DEPLOYMENT, buildId });
    const btc = snapshot.positions.get(INCIDENT.symbol);
    expect(new Dec(btc?.exchange ?? 'NaN').isZero() && new Dec(btc?.ledger ?? 'NaN').isZero()).toBe(true);

    // The Web UI server (scripts/cluster.sh ui) reads this cluster: its page, and through its API the plans by
    // search attribute, as a person filtering the list would.
    const ui = await cluster?.startUi();
    const page = await fetch(`${ui}/namespaces/default/workflows`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);
    const uiApi = async (path: string, query: string) =>
      (await (await fetch(`${ui}/api/v1/namespaces/default/${path}?query=${encodeURIComponent(query)}`)).json()) as {
        count?: string;
        executions?: { execution?: { workflowId?: string } }[];
      };
    expect((await uiApi('workflow-count', `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`)).count).toBe(String(PLANS + 1));
    const found = await uiApi('workflows', `PlanId = "${incidentId}" AND ChainOutcome = "executed"`);
    expect(found.executions?.map((e) => e.execution?.workflowId)).toEqual([planWorkflowId(incidentId)]);

    // The kill hit work in flight: plans whose tasks the dead worker held timed out there and were done elsewhere.
    const recovered = await takeOvers(
      client,
      plans.map((plan) => plan.planId),
    );
    expect(recovered.plans).toBeGreaterThan(0);

    const executed = plans.filter((plan) => snapshot.outcomes.get(plan.planId) === 'executed').length;
    const denied = plans.filter((plan) => snapshot.outcomes.get(plan.planId) === 'denied').length;
    const summary = [
      `cluster test: ${plans.length} plans (the incident + ${PLANS} on ${SYMBOLS} symbols) through 2 workers and 2 intakes on ${cluster?.address}`,
      `  cluster setup ${cluster?.timings.setupMs} ms, start ${cluster?.timings.startMs} ms; processes ready and build ${buildId} current (try ${currentAfter}) at ${startedAt}; feeding done at ${await feedingDone}`,
      `  every plan pinned to build ${buildId} of deployment ${DEPLOYMENT} (the incident's versioning info)`,
      `  SIGKILL worker-a1 and intake-b at ${((killedAt - t0) / 1000).toFixed(1)} s: ${inFlight.fed} fed, ${inFlight.published} published, ${inFlight.running} running`,
      `  the kill left ${recovered.workflowTasks} workflow task time-outs and ${recovered.activityRetries} activity retries in ${recovered.plans} plans, all redone by the other worker`,
      `  both back ${backMs} ms after the kill (dead ${DEAD_FOR_MS} ms); every plan ended ${((allEnded - killedAt) / 1000).toFixed(1)} s after the kill, ${((allEnded - t0) / 1000).toFixed(1)} s in all`,
      `  ${executed} executed, ${denied} denied as designed; ${snapshot.applyEntries.length} Apply entries, ${snapshot.orders.length} orders; exchange == ledger on ${baseline.size} symbols; nothing pending`,
      `  Web UI server at ${ui}: lists the ${PLANS + 1} plans, finds the incident by PlanId and ChainOutcome`,
      `  incident: blocked (${blocked.p33?.reason}), ledger fixed while a worker was dead, executed; ${INCIDENT.symbol} exchange ${btc?.exchange}, ledger ${btc?.ledger}`,
    ].join('\n');
    console.log(summary);
    appendFileSync(join(LOG_DIR, 'summary.txt'), `${summary}\n`);

    // The same reader and checker catch a duplicate on this live data: a second order for an executed plan, the
    // exchange moved by it again (as a retried order without a client order id would).
    const victim = plans.find((plan) => plan.symbol !== INCIDENT.symbol && plan.outcome === 'executed');
    if (!victim) throw new Error('no executed load plan');
    const order = await redis.hgetall(keys.paperOrder(victim.planId));
    await redis.hset(keys.paperOrder(`${victim.planId}-again`), order);
    const stored = (await redis.hget(keys.paperPosition(victim.symbol), 'amount')) ?? 'NaN';
    const amount = new Dec(stored);
    const again = order.side === 'BUY' ? amount.add(order.filled_qty ?? '0') : amount.sub(order.filled_qty ?? '0');
    await redis.hset(keys.paperPosition(victim.symbol), 'amount', again.toFixed());
    const broken = findViolations(
      plans,
      baseline,
      await readSnapshot({ client, redis, keys }, plans, [...baseline.keys()]),
    );
    expect(broken).toContain(`plan ${victim.planId} (executed) has 2 orders, expected 1`);
    expect(broken.some((line) => line.startsWith(`${victim.symbol}: exchange `) && line.includes('!= ledger'))).toBe(
      true,
    );
    // Undone, and the whole run's plans and positions kept: the deploy below checks them all again.
    await redis.del(keys.paperOrder(`${victim.planId}-again`));
    await redis.hset(keys.paperPosition(victim.symbol), 'amount', stored);
    runPlans.push(...plans);
    for (const [symbol, positions] of baseline) runBaseline.set(symbol, positions);
  }, 600_000);

  it('deploys a second build while plans run: plans in flight finish on build A, 60 blocked plans move to build B when woken and execute there once reconciled, build A drains', async () => {
    if (!buildA) throw new Error('the first test did not make build A current: the deploy starts from it');
    const fromA = buildA;
    const t0 = Date.now();
    const at = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
    const run = `deploy-${t0}`;
    // Progress on the test's output as it goes: where a failure happened, and how long each step took.
    const step = (text: string) => console.log(`deploy test, ${at()}: ${text}`);

    // Build B: the same sources but one line of an activity, a build id of its own (the product's hash of them).
    const b = makeSecondBuild(join(runDir, 'build-b'), BUILD_B_CHANGE);
    expect(b.buildId).toMatch(/^[0-9a-f]{16}$/);
    expect(b.buildId).not.toBe(fromA);
    // Its worker starts beside build A's two (bundling its workflows takes seconds): a version of the deployment that
    // gets no plan while A is current.
    const startingB = group.start(workerSpec('worker-b1', env, b.cli));
    step(`build B ${b.buildId} made; its worker starting`);

    // Stale ledgers, as in the incident: every plan on these symbols is blocked by P3.3.
    for (const symbol of STALE_SYMBOLS) {
      await redis.hset(keys.paperPosition(symbol), 'amount', STALE.exchange);
      await redis.hset(keys.position(symbol), 'ledger_amount', STALE.ledger);
    }
    await redis.hset(keys.paperPosition(HELD_SYMBOL), 'amount', START_AMOUNT);
    await redis.hset(keys.position(HELD_SYMBOL), 'ledger_amount', START_AMOUNT);
    const publish = async (fields: Record<string, string>): Promise<ExpectedPlan> => {
      await redis.xadd(keys.exitPlanStream, '*', ...xaddFields(fields));
      return { planId: parsePlan(fields).plan_id, symbol: fields.symbol ?? '', outcome: 'executed' };
    };
    const blocked: ExpectedPlan[] = [];
    for (let i = 0; i < STALE_SYMBOLS.length * BLOCKED_PER_SYMBOL; i++) {
      blocked.push(await publish(deployPlan(STALE_SYMBOLS[i % STALE_SYMBOLS.length] ?? '', i, run)));
    }
    const firstRuns = await eventually(
      async () => {
        const seen = await inLanes(blocked, 16, (plan) => statusOf(plan.planId));
        if (seen.every((s) => s?.stage === 'blocked' && s.p33?.reason === 'reconcile_required_qty_mismatch')) {
          return inLanes(blocked, 16, (plan) => runOf(plan.planId));
        }
        await sleep(500);
        return undefined;
      },
      180_000,
      `${blocked.length} plans blocked by P3.3`,
    );
    const blockedAt = at();
    step(`${blocked.length} plans blocked on build A`);
    expect(firstRuns.every((r) => r.buildId === fromA && r.status === 'RUNNING')).toBe(true);

    // Plans in flight on A across the deploy: HELD_PLANS at once on one symbol, those beyond the rate limit waiting
    // for their slot (admitted, running, holding nothing).
    const held: ExpectedPlan[] = [];
    for (let i = 0; i < HELD_PLANS; i++) held.push(await publish(deployPlan(HELD_SYMBOL, 1000 + i, run)));
    const waiting = await eventually(
      async () => {
        const seen = await inLanes(held, 8, (plan) => statusOf(plan.planId));
        const limited = seen.map(
          (status) =>
            status?.outcome === undefined &&
            status?.timeline.some((entry) => entry.detail.includes('waiting for the next slot')) === true,
        );
        // Once every plan has either ended or is waiting for its slot: on a busy machine, a slot may free before the
        // last of them asks.
        if (limited.some(Boolean) && seen.every((status, i) => status?.outcome !== undefined || limited[i])) {
          return held.filter((_, i) => limited[i]).map((plan) => plan.planId);
        }
        await sleep(300);
        return undefined;
      },
      120_000,
      `the plans over the rate limit on ${HELD_SYMBOL} waiting for their slot`,
    );
    step(`${waiting.length} plans on ${HELD_SYMBOL} waiting for a rate slot`);
    const workerB = await startingB;
    expect(workerB.output()).toContain(`worker: build ${b.buildId} of deployment ${DEPLOYMENT}, versioned`);

    // The deploy, as an operator types it.
    const deployStarted = Date.now();
    const deploy = await runCli(['deploy', b.buildId, '--json'], env, 180_000);
    expect(deploy.code, `${deploy.stdout}\n${deploy.stderr}`).toBe(0);
    const deployedAt = Date.now();
    step(`build B current (permit-chain deploy): ${deployedAt - deployStarted} ms`);
    const deployed = JSON.parse(deploy.stdout) as DeployReport & { audit: { audited?: string } };
    expect(deployed.deployed).toMatchObject({ build_id: b.buildId, as: 'current', previous_current: fromA });
    expect(deployed.current_build_id).toBe(b.buildId);
    // The waiting plans of build A: the blocked ones (those waiting for a rate slot are not at rest, and stay).
    expect(deployed.woken).toBe(blocked.length);
    expect(deployed.audit.audited, JSON.stringify(deployed.audit)).toBeDefined();
    // Still waiting for their slot once B is current: in flight across the deploy.
    const heldAcross = await inLanes(waiting, 8, (planId) => runOf(planId));
    expect(heldAcross.map((r) => r.status)).toEqual(waiting.map(() => 'RUNNING'));

    // Woken by the deploy, each blocked plan continues as new onto B: a new run, pinned to B, blocked still.
    const moved = await eventually(
      async () => {
        const now = await inLanes(blocked, 16, (plan) => runOf(plan.planId));
        if (now.every((r, i) => r.buildId === b.buildId && r.runId !== firstRuns[i]?.runId && r.status === 'RUNNING')) {
          return now;
        }
        await sleep(500);
        return undefined;
      },
      120_000,
      `the ${blocked.length} blocked plans continued as new on build B`,
    );
    const movedAt = at();
    step(`the blocked plans continued as new on build B`);
    const movedMs = Date.now() - deployedAt;
    expect(moved.every((r) => r.behavior === temporal.api.enums.v1.VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)).toBe(
      true,
    );
    const stillBlocked = await inLanes(blocked, 16, (plan) => statusOf(plan.planId));
    expect(stillBlocked.map((s) => s?.stage)).toEqual(blocked.map(() => 'blocked'));
    for (const plan of blocked) expect(await redis.exists(keys.paperOrder(plan.planId))).toBe(0);
    // Their first runs ran on A and ended in the continue-as-new.
    const endedRuns = await inLanes(
      blocked.map((plan, i) => ({ planId: plan.planId, runId: firstRuns[i]?.runId })),
      16,
      ({ planId, runId }) => runOf(planId, runId),
    );
    expect(endedRuns.every((r) => r.buildId === fromA && r.status === 'CONTINUED_AS_NEW')).toBe(true);

    // The operator fixes the ledgers: the plans execute, on B.
    const reconciled = await Promise.all(
      STALE_SYMBOLS.map((symbol) => runCli(['reconcile', symbol, '--by', 'deployer', '--yes', '--json'], env, 120_000)),
    );
    for (const answer of reconciled) {
      expect(answer.code, answer.stderr).toBe(0);
      expect(JSON.parse(answer.stdout)).toMatchObject({ ledger_before: STALE.ledger, ledger_after: STALE.exchange });
    }
    step(`${STALE_SYMBOLS.length} symbols reconciled`);
    const deployPlans = [...blocked, ...held];
    const allPlans = [...runPlans, ...deployPlans];
    const allEnded = await eventually(
      async () => {
        const total = await client.workflow.count(
          `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus != "ContinuedAsNew"`,
        );
        const running = await client.workflow.count(
          `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus = "Running"`,
        );
        if (total.count === allPlans.length && running.count === 0) return Date.now();
        await sleep(500);
        return undefined;
      },
      240_000,
      'every plan of the deploy ended',
    );

    // Nothing lost or duplicated over the whole run, both builds on one Redis: one Apply entry and one order per
    // executed plan, exchange == ledger on every symbol, each moved by exactly its fills.
    step('every plan ended');
    const baseline = new Map(runBaseline);
    for (const symbol of STALE_SYMBOLS) baseline.set(symbol, { exchange: STALE.exchange, ledger: STALE.exchange });
    baseline.set(HELD_SYMBOL, { exchange: START_AMOUNT, ledger: START_AMOUNT });
    const snapshot = await readSnapshot({ client, redis, keys }, allPlans, [...baseline.keys()]);
    expect(findViolations(allPlans, baseline, snapshot)).toEqual([]);

    const host = hostname();
    const pidsOf = (names: string[]) => new Set(names.map((name) => `${group.get(name).pid ?? 'none'}@${host}`));
    const onA = pidsOf(['worker-a1', 'worker-a2']);
    const onB = pidsOf(['worker-b1']);
    // The moved plans executed on B: every workflow task of their last run completed by B, Execute started once,
    // by B's worker, running B's code (its changed line, once per plan).
    const movedRan = await inLanes(blocked, 16, (plan) => whereItRan(plan.planId));
    expect(movedRan.map((r) => [...r.taskBuilds])).toEqual(blocked.map(() => [b.buildId]));
    expect(movedRan.map((r) => r.executeStarts.length)).toEqual(blocked.map(() => 1));
    expect(movedRan.every((r) => r.executeStarts.every((start) => onB.has(start.identity)))).toBe(true);
    const bExecuted = [...readFileSync(workerB.logFile, 'utf8').matchAll(BUILD_B_EXECUTE)].map((m) => m[1]);
    expect(bExecuted.filter((id) => blocked.some((plan) => plan.planId === id)).sort()).toEqual(
      blocked.map((plan) => plan.planId).sort(),
    );
    expect(bExecuted.filter((id) => !blocked.some((plan) => plan.planId === id))).toEqual([]);
    // The plans in flight finished on A: every workflow task by A, Execute by A's workers, after the deploy.
    const heldRan = await inLanes(waiting, 8, (planId) => whereItRan(planId));
    expect(heldRan.map((r) => [...r.taskBuilds])).toEqual(waiting.map(() => [fromA]));
    expect(heldRan.every((r) => r.executeStarts.length === 1 && onA.has(r.executeStarts[0]?.identity ?? ''))).toBe(
      true,
    );
    expect(heldRan.every((r) => (r.executeStarts[0]?.at ?? 0) > deployStarted)).toBe(true);
    const heldEnded = await inLanes(waiting, 8, (planId) => runOf(planId));
    expect(heldEnded.every((r) => r.buildId === fromA && r.status === 'COMPLETED')).toBe(true);

    // No worker of either build met a workflow history its code could not replay.
    const workerLogs = readdirSync(LOG_DIR).filter((name) => /^worker-.*\.log$/.test(name));
    expect(workerLogs.sort()).toEqual(['worker-a1.log', 'worker-a2.log', 'worker-b1.log']);
    for (const name of workerLogs) {
      expect(readFileSync(join(LOG_DIR, name), 'utf8'), name).not.toMatch(/nondeterminism|TMPRL1100/i);
    }

    // Build A retired: its workers stopped, a plan that ended on it still answers `status`.
    await Promise.all([group.get('worker-a1').stop(), group.get('worker-a2').stop()]);
    step("build A's workers stopped");
    const endedOnA = waiting[0] ?? '';
    const statusStarted = Date.now();
    const status = await runCli(['status', endedOnA, '--json'], env, 60_000);
    const statusMs = Date.now() - statusStarted;
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ plan_id: endedOnA, outcome: 'executed' });
    expect(statusMs).toBeLessThan(10_000);

    // And the server reports A drained: no open plan is pinned to it.
    const drained = await eventually(
      async () => {
        const answer = await runCli(['deploy', 'status', '--json'], env);
        expect(answer.code, answer.stderr).toBe(0);
        const report = JSON.parse(answer.stdout) as DeploymentReport;
        if (report.versions.find((v) => v.build_id === fromA)?.status === 'drained') return report;
        await sleep(1000);
        return undefined;
      },
      120_000,
      `build ${fromA} reported drained`,
    );
    const drainedAt = at();
    expect(drained.deployment).toBe(DEPLOYMENT);
    expect(drained.current_build_id).toBe(b.buildId);
    expect(drained.versions.find((v) => v.build_id === b.buildId)?.status).toBe('current');
    expect(drained.versions.find((v) => v.build_id === fromA)?.running_plans).toBe(0);

    const summary = [
      `deploy: build B ${b.buildId} (the checkout's sources, one line of activities/index.ts changed) beside build A ${fromA}`,
      `  ${blocked.length} plans on ${STALE_SYMBOLS.length} symbols blocked (reconcile_required_qty_mismatch) on A at ${blockedAt}; ${waiting.length} of ${HELD_PLANS} on ${HELD_SYMBOL} waiting for a rate slot on A`,
      `  permit-chain deploy ${b.buildId}: ${deployedAt - deployStarted} ms; the blocked plans continued as new onto B ${movedMs} ms after it (${movedAt})`,
      `  reconciled ${STALE_SYMBOLS.length} symbols: the ${blocked.length} plans executed on B once each (B's Execute line, B's worker identity); every plan ended ${((allEnded - deployedAt) / 1000).toFixed(1)} s after the deploy`,
      `  the ${waiting.length} plans in flight finished on A (every workflow task and Execute on A, after the deploy); no non-determinism in ${workerLogs.length} worker logs`,
      `  A's workers stopped: status of ${endedOnA} (ended on A) in ${statusMs} ms; A reported drained at ${drainedAt}; ${((Date.now() - t0) / 1000).toFixed(1)} s in all`,
    ].join('\n');
    console.log(summary);
    appendFileSync(join(LOG_DIR, 'summary.txt'), `${summary}\n`);
  }, 600_000);
});
