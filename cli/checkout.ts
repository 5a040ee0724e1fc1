import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The project's root: `.tools/` and `.data/` live here (compiled, this file is in dist/cli/). */
export const PROJECT_ROOT = resolve(__dirname, ...(__filename.endsWith('.js') ? ['..', '..'] : ['..']));

/** The Binance double's entry: a tool of the checkout (scripts/), which the image does not carry. */
export const BINANCE_DOUBLE_MAIN = join(PROJECT_ROOT, 'scripts', 'binance-double', 'main.ts');

/** True where the checkout's tools can run: their sources, and tsx from the dev dependencies to run them. */
export function checkoutToolsHere(): boolean {
  return existsSync(BINANCE_DOUBLE_MAIN) && existsSync(join(PROJECT_ROOT, 'node_modules', 'tsx'));
}
