import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { Client } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { tracingFor } from '../../workers/tracing';
import { createChainWorker } from '../../workers/worker';
import { chainHarness, makePlan, setPositions, testConfig, type ChainHarness } from '../helpers';

let h: ChainHarness;

beforeAll(async () => {
  h = await chainHarness(testConfig());
});
afterAll(async () => {
  await h?.close();
});

describe('OpenTelemetry tracing', () => {
  it('is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set', async () => {
    expect(tracingFor(loadConfig({}).telemetry, 'permit-chain-worker')).toBeUndefined();
    const on = tracingFor(
      loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }).telemetry,
      'permit-chain-worker',
    );
    expect(on?.plugin.name).toBe('OpenTelemetryPlugin');
    await on?.shutdown();
  });

  it('on, a plan still executes, and its start, workflow and layers are one trace', async () => {
    const exporter = new InMemorySpanExporter();
    const tracing = tracingFor({ otlpEndpoint: null, serviceName: 'permit-chain-test' }, 'unused', exporter);
    if (!tracing) throw new Error('tracing with an exporter of its own is on');
    const connection = await NativeConnection.connect({ address: h.config.temporalAddress });
    try {
      // No prebuilt bundle: the worker bundles `workflows/` with the tracing plugin's workflow interceptors, as a
      // deployed worker does.
      const worker = await createChainWorker({ config: h.config, redis: h.redis, connection, tracing });
      const client = new Client({ connection: h.client.connection, plugins: [tracing.plugin] });
      await setPositions(h, 'LTCUSDT', '3', '3');
      const plan = makePlan({ symbol: 'LTCUSDT', qty: '1' });
      const final = await worker.runUntil(async () => {
        const { handle } = await startPlan(client, h.config, plan);
        return await handle.result();
      });
      expect(final.outcome).toBe('executed');

      const spans = exporter.getFinishedSpans();
      const named = (name: string) => spans.filter((span) => span.name === name);
      const start = named('StartWorkflow:permitChain');
      expect(start).toHaveLength(1);
      const traceId = start[0]?.spanContext().traceId;
      for (const name of ['RunWorkflow:permitChain', 'RunActivity:executePlan', 'RunActivity:governorTurn']) {
        expect(named(name).length, name).toBeGreaterThan(0);
        for (const span of named(name)) expect(span.spanContext().traceId, name).toBe(traceId);
      }
      expect(start[0]?.resource.attributes['service.name']).toBe('permit-chain-test');
    } finally {
      await tracing.shutdown();
      await connection.close();
    }
  }, 120_000);
});
