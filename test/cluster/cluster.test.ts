/**
 * The chain as it is deployed, on a real Temporal cluster (the server binary on PostgreSQL, `scripts/cluster.sh`),
 * with two worker processes and two intake processes, fed through the upstream stream: the seed's incident and 300
 * plans on 20 symbols, one worker and one intake SIGKILLed mid-run and started again. Nothing may be lost or
 * duplicated. The workers run versioned (WORKER_VERSIONING), as in docker-compose.yml: their build is made the
 * deployment's current version with the command of the runbook before any plan arrives, and every plan is pinned to it. Run by `npm run test:cluster` (not by `npm test`: it builds and starts a cluster); logs of every
 * process in test-results/cluster/.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  readSnapshot,
  takeOvers,
  type ExpectedPlan,
  type Positions,
} from '../../scripts/stack/invariants';
import { ProcessGroup } from '../../scripts/stack/processes';

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
  cluster = await startCluster(runDir, (text) => appendFileSync(clusterLog, text));
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
      group.start(workerSpec('worker-a', env)),
      group.start(workerSpec('worker-b', env)),
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

    // While they are dead, the operator fixes the incident's ledger (the seed's one command).
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
      `  SIGKILL worker-a and intake-b at ${((killedAt - t0) / 1000).toFixed(1)} s: ${inFlight.fed} fed, ${inFlight.published} published, ${inFlight.running} running`,
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
    const amount = new Dec((await redis.hget(keys.paperPosition(victim.symbol), 'amount')) ?? 'NaN');
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
  }, 600_000);
});
