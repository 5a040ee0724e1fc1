import type { ConnectionLike } from '@temporalio/client';
import { status } from '@grpc/grpc-js';
import { temporal } from '@temporalio/proto';
import { CHAIN_SEARCH_ATTRIBUTES } from '../contract/messages';

const KEYWORD = temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD;

/**
 * Registers the chain's search attributes (all Keyword) in a namespace, leaving those already there alone.
 * Returns the names it added. The dev server gets them at start; clusters and the test server get them here.
 */
export async function registerSearchAttributes(connection: ConnectionLike, namespace: string): Promise<string[]> {
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
