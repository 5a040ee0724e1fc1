import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { Resource } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { OpenTelemetryPlugin } from '@temporalio/interceptors-opentelemetry';
import type { TelemetryConfig } from '../lib/config';

/** OpenTelemetry tracing of the chain: the plugin for the worker and the clients, and how to flush it at the end. */
export interface Tracing {
  /**
   * The SDK's OpenTelemetry plugin: spans for starting a plan (client), running its workflow and each activity
   * (worker), one trace per plan, propagated through the workflow's headers.
   */
  plugin: OpenTelemetryPlugin;
  /** Sends what is buffered and stops. */
  shutdown(): Promise<void>;
}

/**
 * Tracing as configured: off (undefined) unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set, then spans go there over
 * OTLP/HTTP (protobuf, `{endpoint}/v1/traces`; `OTEL_EXPORTER_OTLP_HEADERS` is honoured by the exporter). A test
 * passes its own exporter instead. Registers the process's global tracer provider, context manager and W3C
 * propagator, which the SDK's interceptors use.
 */
export function tracingFor(
  telemetry: Pick<TelemetryConfig, 'otlpEndpoint' | 'serviceName'>,
  processName: string,
  exporter?: SpanExporter,
): Tracing | undefined {
  const endpoint = telemetry.otlpEndpoint;
  if (!exporter && endpoint === null) return undefined;
  const resource = new Resource({ 'service.name': telemetry.serviceName ?? processName });
  const spanExporter = exporter ?? new OTLPTraceExporter({ url: `${(endpoint ?? '').replace(/\/+$/, '')}/v1/traces` });
  // A test's exporter sees each span as it ends; a collector gets them in batches.
  const spanProcessor = exporter ? new SimpleSpanProcessor(spanExporter) : new BatchSpanProcessor(spanExporter);
  const provider = new BasicTracerProvider({ resource, spanProcessors: [spanProcessor] });
  provider.register({ contextManager: new AsyncLocalStorageContextManager().enable() });
  return {
    plugin: new OpenTelemetryPlugin({ resource, spanProcessor }),
    async shutdown() {
      await provider.shutdown();
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}
