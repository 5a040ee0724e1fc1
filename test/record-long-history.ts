/**
 * Records the history of a plan that waited long: blocked for 40 hours with the real re-check interval (30 s, a look
 * every 300 s), then reconciled, retried and executed. It is recorded on the time-skipping test server, so the
 * 40 hours pass in seconds, into test/histories/blocked-long.json.gz (gzip keeps its ~2,000 events small).
 *
 *   sh scripts/with-node.sh tsx test/record-long-history.ts
 *
 * Its first run is what is kept: the plan's long wait up to where it continues as new (its history near
 * CONTINUE_AS_NEW_EVENTS, the carried state handed over, the continue-as-new command), which a change to the workflow
 * must still replay while such a plan is running. Record it again with each build (docs/testing.md).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, bundleWorkflowCode } from '@temporalio/worker';
import { startPlan } from '../client/plans';
import { registerSearchAttributes } from '../client/search-attributes';
import { redisKeys } from '../contract/keys';
import { retrySignal, statusQuery } from '../contract/messages';
import { loadConfig } from '../lib/config';
import { connectRedis } from '../lib/connections';
import { parsePlan } from '../lib/plan';
import { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES, createChainWorker } from '../workers/worker';
import {
  PROJECT_ROOT,
  ensureServersInstalled,
  freePort,
  startRedis,
  temporalCliExecutable,
  testServerExecutable,
} from '../cli/servers';

const OUT = join(PROJECT_ROOT, 'test', 'histories', 'blocked-long.json.gz');

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  ensureServersInstalled({ forTests: true });
  const cli = temporalCliExecutable();
  if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
  const redisServer = await startRedis({ port: await freePort() });
  const env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: testServerExecutable() } });
  const config = loadConfig({
    REDIS_URL: redisServer.url,
    TASK_QUEUE: 'record-blocked-long',
    KEY_PREFIX: 'record-blocked-long',
    PLAN_MAX_AGE_S: String(3 * 24 * 3600),
  });
  const keys = redisKeys(config.keyPrefix);
  const redis = await connectRedis(config);
  try {
    await registerSearchAttributes(env.connection, 'default');
    const bundle = await bundleWorkflowCode({
      workflowsPath: WORKFLOWS_PATH,
      workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
    });
    const worker = await createChainWorker({
      config,
      redis,
      connection: env.nativeConnection,
      workflowBundle: { code: bundle.code },
    });
    await redis.hset(keys.paperPosition('BTCUSDT'), 'amount', '0.062');
    await redis.hset(keys.position('BTCUSDT'), 'ledger_amount', '0.002');
    const plan = parsePlan({
      action: 'EXECUTE',
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.062',
      source: 'record-histories',
      created_at: Date.now(),
    });
    const { workflowId, firstRunId } = await worker.runUntil(async () => {
      const { workflowId, handle } = await startPlan(env.client, config, plan);
      const firstRunId = (await handle.describe()).runId;
      await env.sleep('40h');
      const blocked = await handle.query(statusQuery);
      if (blocked.stage !== 'blocked') throw new Error(`record: the plan is ${blocked.stage}, not blocked`);
      await redis.hset(keys.position('BTCUSDT'), 'ledger_amount', '0.062');
      await handle.signal(retrySignal, { by: 'ops' });
      const final = await handle.result();
      if (final.outcome !== 'executed') throw new Error(`record: the plan ended ${final.outcome}`);
      return { workflowId, firstRunId };
    });
    const shown = spawnSync(
      cli.path,
      ['workflow', 'show', '-w', workflowId, '-r', firstRunId, '--address', env.address, '-o', 'json'],
      { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 },
    );
    if (shown.status !== 0) throw new Error(`temporal workflow show failed: ${shown.stderr}`);
    const events = (JSON.parse(shown.stdout) as { events: { eventType?: string }[] }).events;
    const last = events.at(-1)?.eventType ?? '';
    if (!/CONTINUED_AS_NEW|ContinuedAsNew/i.test(last))
      throw new Error(`record: the first run ended ${last}, not continued`);
    writeFileSync(OUT, gzipSync(shown.stdout));
    console.log(`recorded blocked-long: the first run, ${events.length} events, continued as new`);
  } finally {
    redis.disconnect();
    await env.teardown();
    await redisServer.stop();
  }
}

main().catch((err: unknown) => {
  console.error(`record-long-history: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
