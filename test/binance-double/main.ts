import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBinanceDouble } from './server';

/**
 * The Binance double, by hand: `npx tsx test/binance-double/main.ts --port 18080 [--hedge] [--skew-ms 0]`.
 * The API secret is written to a file readable by its owner only; the console shows the key and the file's path.
 */
async function main() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '18080' },
      hedge: { type: 'boolean', default: false },
      'skew-ms': { type: 'string', default: '0' },
    },
  });
  const port = Number(values.port);
  const skewMs = Number(values['skew-ms']);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port is not a port: ${values.port}`);
  if (!Number.isFinite(skewMs)) throw new Error(`--skew-ms is not a number: ${values['skew-ms']}`);

  const double = await startBinanceDouble({ port, hedgeMode: values.hedge, skewMs });
  const secretFile = join(mkdtempSync(join(tmpdir(), 'binance-double-')), 'api-secret');
  writeFileSync(secretFile, `${double.apiSecret}\n`, { mode: 0o600 });
  console.log(`binance double on ${double.url} (api key ${double.apiKey}; secret in ${secretFile})`);

  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await double.stop();
}

main().catch((error: unknown) => {
  console.error(`binance double: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
