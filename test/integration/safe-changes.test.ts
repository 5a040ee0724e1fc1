import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TAKE_RATE_SLOT, takeRateSlot, type RateWindow } from '../../activities/governor';
import { startPlan } from '../../client/plans';
import { cancelPlanUpdate } from '../../contract/messages';
import type { ChainStatus } from '../../contract/types';
import type { WhatIfReport } from '../../client/what-if';
import { loadConfig } from '../../lib/config';
import { PROJECT_ROOT } from '../../cli/servers';
import { runCli } from '../../scripts/stack/cli-runner';
import {
  chainHarness,
  eventually,
  makePlan,
  reorderedWorkflowBundle,
  setPositions,
  testEnv,
  waitForStage,
  type ChainHarness,
} from '../helpers';

/**
 * Safe changes on a recorded window: a real worker runs five plans (two small BTCUSDT, a big ETHUSDT, a SOLUSDT
 * blocked by a 0.004 discrepancy, an XRPUSDT over the worker's GOVERNOR_MAX_QTY=1), then `what-if` re-decides them
 * under proposed settings and `replay-check` replays them, both as separate CLI processes that write nothing.
 */
const env = testEnv({ GOVERNOR_MAX_QTY: '1' });
const config = loadConfig(env);
let h: ChainHarness;
const ids = { btc1: '', btc2: '', eth: '', sol: '', xrp: '' };
let windowFrom = 0;

type WhatIfJson = WhatIfReport & { proposed: Record<string, string>; source: string; context_plans: number };

async function whatIf(...args: string[]): Promise<WhatIfJson> {
  const run = await runCli(['what-if', '--json', ...args], env);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout) as WhatIfJson;
}

/** Each flip as `plan layer before→after`, sorted. */
function flips(report: WhatIfReport): string[] {
  return report.flips.map((f) => `${f.plan_id} ${f.layer} ${f.before.decision}→${f.after.decision}`).sort();
}

/** Every key of the test's prefix with its DUMP, and how many workflows its task queue has. */
async function everything(): Promise<{ keys: Record<string, string>; workflows: number }> {
  const keys: Record<string, string> = {};
  for (const key of (await h.redis.keys(`${config.keyPrefix}:*`)).sort()) {
    keys[key] = (await h.redis.dumpBuffer(key))?.toString('base64') ?? '';
  }
  const { count } = await h.client.workflow.count(`TaskQueue = "${config.taskQueue}"`);
  return { keys, workflows: count };
}

beforeAll(async () => {
  h = await chainHarness(config);
  windowFrom = Date.now() - 1000;
  await setPositions(h, 'BTCUSDT', '0.2', '0.2');
  await setPositions(h, 'ETHUSDT', '0.8', '0.8');
  await setPositions(h, 'SOLUSDT', '0.404', '0.4');
  await setPositions(h, 'XRPUSDT', '2', '2');
  await h.withWorker(async () => {
    const run = async (fields: Record<string, unknown>): Promise<[string, ChainStatus]> => {
      const plan = makePlan(fields);
      const started = await startPlan(h.client, config, plan);
      return [plan.plan_id, await started.handle.result()];
    };
    const outcomes: Record<string, ChainStatus> = {};
    for (const [name, fields] of [
      ['btc1', { symbol: 'BTCUSDT', qty: '0.1' }],
      ['btc2', { symbol: 'BTCUSDT', qty: '0.1' }],
      ['eth', { symbol: 'ETHUSDT', qty: '0.8' }],
      ['xrp', { symbol: 'XRPUSDT', qty: '2' }],
    ] as const) {
      const [id, status] = await run(fields);
      ids[name] = id;
      outcomes[name] = status;
    }
    expect(Object.values(outcomes).map((s) => s.outcome)).toEqual(['executed', 'executed', 'executed', 'denied']);
    const sol = makePlan({ symbol: 'SOLUSDT', qty: '0.4' });
    ids.sol = sol.plan_id;
    await startPlan(h.client, config, sol);
    expect((await waitForStage(h, `plan-${sol.plan_id}`, 'blocked')).p33?.reason).toBe(
      'reconcile_required_qty_mismatch',
    );
  });
  // Visibility catches up with the five starts (the dev server's list is near-immediate, but not instant).
  await eventually(async () => {
    const { count } = await h.client.workflow.count(`TaskQueue = "${config.taskQueue}"`);
    return count === 5 ? true : undefined;
  });
});

afterAll(async () => {
  if (ids.sol) {
    await h.withWorker(() =>
      h.client.workflow
        .getHandle(`plan-${ids.sol}`)
        .executeUpdate(cancelPlanUpdate, { args: [{ by: 'test', reason: 'done' }] }),
    );
  }
  await h?.close();
});

describe('what-if', () => {
  it('flips the big plan to denied under a tighter --max-qty and the blocked one to allowed under a looser tolerance, and writes nothing', async () => {
    const before = await everything();
    const report = await whatIf('--since', '10m', '--max-qty', '0.5', '--p33-tolerance', '0.005');
    expect(await everything()).toEqual(before);
    expect(report.source).toBe('temporal_history');
    expect(report.proposed).toEqual({ GOVERNOR_MAX_QTY: '0.5', P33_TOLERANCE: '0.005' });
    expect(report.plans).toBe(5);
    expect(flips(report)).toEqual([`${ids.eth} governor granted→denied`, `${ids.sol} p33 denied→allowed`].sort());
    const eth = report.flips.find((f) => f.plan_id === ids.eth);
    expect(eth).toMatchObject({
      symbol: 'ETHUSDT',
      before: { decision: 'granted', reason: 'testnet_auto_approved' },
      after: { decision: 'denied', reason: 'size_limit_exceeded' },
      why: 'qty 0.8 > max 0.5',
    });
    expect(report.flips.find((f) => f.plan_id === ids.sol)?.why).toContain('discrepancy 0.004 <= tolerance 0.005');
    // Five Governor decisions (each plan once), four P3.3 checks (the denied plan never reached P3.3).
    expect(report.totals.governor).toEqual({
      decisions: 5,
      flips: 1,
      by_change: { 'granted → denied (size_limit_exceeded)': 1 },
    });
    expect(report.totals.p33).toMatchObject({
      flips: 1,
      by_change: { 'denied → allowed (positions_reconciled)': 1 },
    });
    expect(report.undecided).toEqual([]);
  });

  it('flips the plan the worker denied under a looser limit, and nothing else; the text names it', async () => {
    const to = new Date().toISOString();
    const json = await whatIf('--from', new Date(windowFrom).toISOString(), '--to', to, '--max-qty', '3');
    expect(flips(json)).toEqual([`${ids.xrp} governor denied→granted`]);
    const text = await runCli(['what-if', '--since', '10m', '--max-qty', '3'], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('1 decision(s) would flip');
    expect(text.stdout).toMatch(
      new RegExp(`${ids.xrp}\\s+XRPUSDT\\s+governor denied \\(size_limit_exceeded\\) → granted`),
    );
    expect(text.stdout).toContain('nothing was written');
  });

  it('a per-symbol limit flips that symbol only; a rate limit flips the second grant on a symbol in its window', async () => {
    expect(flips(await whatIf('--since', '10m', '--max-qty-ETHUSDT', '0.5'))).toEqual([
      `${ids.eth} governor granted→denied`,
    ]);
    const limited = await whatIf('--since', '10m', '--rate-limit', '1/60s');
    expect(flips(limited)).toEqual([`${ids.btc2} governor granted→rate_limited`]);
    expect(limited.flips[0]?.why).toMatch(/^rate limit 1\/60s on BTCUSDT: waits until /);
  });

  it('takes the proposal from a settings file, JSON or env-file, checked by the worker rules', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'what-if-'));
    writeFileSync(
      join(dir, 'worker.env'),
      '# the worker\nexport P33_TOLERANCE="0.005"\nGOVERNOR_MAX_QTY=1\nTASK_QUEUE=x\n',
    );
    expect(flips(await whatIf('--since', '10m', '--settings', join(dir, 'worker.env')))).toEqual([
      `${ids.sol} p33 denied→allowed`,
    ]);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ GOVERNOR_RATE_LIMIT: 'often' }));
    const bad = await runCli(['what-if', '--settings', join(dir, 'bad.json')], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^permit-chain: what-if: --settings .*bad\.json: GOVERNOR_RATE_LIMIT must be/);
    writeFileSync(join(dir, 'typo.json'), JSON.stringify({ GOVERNOR_MAX_QTTY: '1' }));
    const typo = await runCli(['what-if', '--settings', join(dir, 'typo.json')], env);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('GOVERNOR_MAX_QTTY');
    const flag = await runCli(['what-if', '--max-qty', 'lots'], env);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('--max-qty: GOVERNOR_MAX_QTY must be a decimal number >= 0');
  });

  it("the rate window's pure twin answers as the Lua script does in Redis", async () => {
    h.redis.defineCommand('takeRateSlotTwin', { numberOfKeys: 1, lua: TAKE_RATE_SLOT });
    const key = `${config.keyPrefix}:twin`;
    const twin: RateWindow = new Map();
    const rule = { count: 2, windowMs: 1000 };
    const requests: [number, string][] = [
      [0, 'a'],
      [10, 'b'],
      [20, 'c'],
      [20, 'a'],
      [1000, 'c'],
      [1010, 'c'],
      [1011, 'd'],
      [1500, 'e'],
      [2010, 'e'],
      [2011, 'f'],
    ];
    for (const [at, plan] of requests) {
      const [ok, freeAt] = await (
        h.redis as unknown as { takeRateSlotTwin: (...a: string[]) => Promise<[number, number]> }
      ).takeRateSlotTwin(key, String(at), String(rule.windowMs), String(rule.count), plan);
      const mine = takeRateSlot(twin, at, rule, plan);
      expect(mine, `${plan} at ${at}`).toEqual(ok === 1 ? { ok: true } : { ok: false, freeAt });
    }
    await h.redis.del(key);
  });
});

describe('replay-check', () => {
  it('replays the recorded histories', async () => {
    const run = await runCli(['replay-check', '--histories', join(PROJECT_ROOT, 'test', 'histories')], env);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^replay-check: 7 history\(ies\) replayed against .*: all replay$/m);
  });

  it("replays the server's recent and running plans, and names each plan and event a reordered workflow breaks", async () => {
    const recent = await runCli(['replay-check', '--since', '1h', '--json'], env);
    expect(recent.code).toBe(0);
    expect(JSON.parse(recent.stdout)).toMatchObject({ replayed: 5, divergences: [] });
    const running = await runCli(['replay-check', '--running', '--json'], env);
    expect(JSON.parse(running.stdout)).toMatchObject({ replayed: 1, divergences: [] });

    const codePath = await reorderedWorkflowBundle();
    const broken = await runCli(['replay-check', '--running', '--workflow-bundle', codePath], env);
    expect(broken.code).toBe(3);
    expect(broken.stdout).toMatch(
      new RegExp(
        `^  plan-${ids.sol} \\(run [0-9a-f-]+\\): diverges at event \\d+ \\(the first event recording governorTurn, where the code now issues publishPlan\\): \\[TMPRL1100\\] Nondeterminism error`,
        'm',
      ),
    );
    const files = await runCli(
      [
        'replay-check',
        '--histories',
        join(PROJECT_ROOT, 'test', 'histories', 'executed.json'),
        '--workflow-bundle',
        codePath,
        '--json',
      ],
      env,
    );
    expect(files.code).toBe(3);
    expect(JSON.parse(files.stdout)).toMatchObject({
      replayed: 1,
      divergences: [{ workflow_id: 'executed', event_id: 5, kind: 'nondeterminism' }],
    });
  });
});
