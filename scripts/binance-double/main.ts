import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBinanceDouble, type SymbolRules } from './server';

/** The rules of a symbol named with `--symbols`: a step of 0.001, a mark price of 100, any notional. */
const GENERIC_SYMBOL: SymbolRules & { markPrice: string } = {
  stepSize: '0.001',
  minQty: '0.001',
  minNotional: '0.01',
  maxQty: '100000',
  marketMaxQty: '10000',
  tickSize: '0.01',
  markPrice: '100.00',
};

/**
 * The Binance double, by hand: `npx tsx scripts/binance-double/main.ts --port 18080 [--hedge] [--skew-ms 0]
 * [--symbols AAAUSDT,BBBUSDT] [--key-dir DIR]`. The API key and secret are written to files readable by their owner
 * only (`api-key`, `api-secret` in `--key-dir`, else a new temporary folder); the console shows the key and the
 * secret file's path. `--symbols` replaces BTCUSDT and ETHUSDT with symbols of generic rules (step 0.001, price 100).
 */
async function main() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '18080' },
      hedge: { type: 'boolean', default: false },
      'skew-ms': { type: 'string', default: '0' },
      symbols: { type: 'string' },
      'key-dir': { type: 'string' },
    },
  });
  const port = Number(values.port);
  const skewMs = Number(values['skew-ms']);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port is not a port: ${values.port}`);
  if (!Number.isFinite(skewMs)) throw new Error(`--skew-ms is not a number: ${values['skew-ms']}`);
  const names = values.symbols?.split(',').map((name) => name.trim()) ?? [];
  if (names.some((name) => !/^[A-Z0-9]{2,20}$/.test(name))) throw new Error(`--symbols: ${values.symbols}`);

  const double = await startBinanceDouble({
    port,
    hedgeMode: values.hedge,
    skewMs,
    ...(names.length > 0 ? { symbols: Object.fromEntries(names.map((name) => [name, GENERIC_SYMBOL])) } : {}),
  });
  const dir = values['key-dir'] ?? mkdtempSync(join(tmpdir(), 'binance-double-'));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = join(dir, 'api-secret');
  writeFileSync(join(dir, 'api-key'), `${double.apiKey}\n`, { mode: 0o600 });
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
