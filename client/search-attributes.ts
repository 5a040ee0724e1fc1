import type { ConnectionLike } from '@temporalio/client';
import { status } from '@grpc/grpc-js';
import { temporal } from '@temporalio/proto';
import { CHAIN_SEARCH_ATTRIBUTES } from '../contract/messages';

const KEYWORD = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;

/**
 * How long a namespace may be unknown before registering gives up: on a cluster, a namespace created a moment ago
 * reaches every service within seconds (the one-shots of docker-compose.yml create it, then register at once).
 */
export const NAMESPACE_WAIT_MS = 30_000;

/**
 * Registers the chain's search attributes (all Keyword) in a namespace, leaving those already there alone.
 * Returns the names it added. The dev server gets them at start; clusters and the test server get them here. A
 * namespace not found is asked for again until `waitMs` has passed.
 */
export async function registerSearchAttributes(
  connection: ConnectionLike,
  namespace: string,
  waitMs = NAMESPACE_WAIT_MS,
): Promise<string[]> {
  const deadline = Date.now() + waitMs;
  for (let pause = 100; ; pause = Math.min(pause * 2, 2_000)) {
    try {
      return await registerMissing(connection, namespace);
    } catch (err) {
      if ((err as { code?: number }).code !== status.NOT_FOUND || Date.now() + pause > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

async function registerMissing(connection: ConnectionLike, namespace: string): Promise<string[]> {
  const known = await registeredNames(connection, namespace);
  const missing = CHAIN_SEARCH_ATTRIBUTES.map((key) => key.name).filter((name) => !known.has(name));
  if (missing.length === 0) return [];
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map((name) => [name, KEYWORD])),
  });
  return missing;
}

/** The names already registered; the time-skipping test server cannot list them, so there it is none. */
async function registeredNames(connection: ConnectionLike, namespace: string): Promise<Set<string>> {
  try {
    const existing = await connection.operatorService.listSearchAttributes({ namespace });
    return new Set([...Object.keys(existing.customAttributes ?? {}), ...Object.keys(existing.systemAttributes ?? {})]);
  } catch (err) {
    if ((err as { code?: number }).code === status.UNIMPLEMENTED) return new Set();
    throw err;
  }
}
