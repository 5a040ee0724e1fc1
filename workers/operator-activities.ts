import type { KeyObject } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import type { ExchangePort } from '../activities/exchange/port';
import { ReconcileStale } from '../activities/ledger';
import {
  positionView,
  previewReconcile,
  reconcileLedger,
  ResetRefused,
  refuseUnlessFailed,
  resetFailedPlan,
  retryBlocked,
  setKillSwitch,
  type ReconcilePreview,
} from '../client/operations';
import { DeployRefused, recordDeploy } from '../client/deployments';
import { redisKeys } from '../contract/keys';
import type { OperatorAnswer, OperatorRequest, OperationSignature } from '../contract/operations';
import { APPROVER_NAME, keyFingerprint, operationRefusal, type SignedOperation } from '../lib/approval';
import type { ChainConfig } from '../lib/config';
import type { Logger } from '../lib/log';
import { boundText } from '../lib/bound';
import { PLAN_ID, SYMBOL_PATTERN } from '../lib/plan';
import { liveVenue, venueHost, workerIdentity } from '../lib/venue';
import { currentBuildId } from './build-id';

export interface OperatorDeps {
  redis: Redis;
  config: ChainConfig;
  exchange: ExchangePort;
  clock: () => number;
  /** The worker's Temporal client: a reconcile wakes the symbol's plans, a retry of a failed plan resets it. */
  client: () => Promise<Client>;
  /** The operators' public keys (lib/approval.ts loadOperatorKeys), by name. */
  operatorKeys: ReadonlyMap<string, KeyObject>;
  logger?: Logger;
}

/** How long a used nonce is remembered past its signature's expiry: beyond any clock skew between workers. */
const NONCE_MARGIN_MS = 60_000;

function refuse(message: string): never {
  throw ApplicationFailure.nonRetryable(message, 'Refused');
}

/**
 * The operators' operations, performed by the worker with its own Redis, exchange and rules: what the
 * `operatorOperation` workflow runs. Reads are open; `reconcile` and `kill-switch off` are authorized first
 * ({@link authorize}); `kill-switch on` is open to anyone: stopping is always allowed.
 */
export function createOperatorActivities(deps: OperatorDeps) {
  // Once: it hashes the sources (or reads dist/build-info.json).
  const buildId = currentBuildId();
  const { redis, config, exchange, clock } = deps;
  const keys = redisKeys(config.keyPrefix);
  const reconcileDeps = { redis, config, exchange, clock };

  /**
   * Who the operation is recorded as. Signed: the signature must verify with the key of a name in OPERATORS over
   * exactly this operation, unexpired, and its nonce must be new (remembered in Redis past the expiry). Unsigned:
   * accepted only in testnet mode on a venue that is not Binance's live one, recorded as unsigned.
   */
  async function authorize(
    operation: SignedOperation['operation'],
    by: string,
    bound: Partial<SignedOperation>,
    signed?: OperationSignature,
  ) {
    const mustSign =
      config.tradingMode === 'production'
        ? 'production mode'
        : liveVenue(config)
          ? `the live venue ${venueHost(config)}`
          : undefined;
    if (!signed) {
      if (mustSign) {
        refuse(
          `unsigned: on ${mustSign}, ${operation.replaceAll('_', ' ')} must be signed by a name in OPERATORS ` +
            '(--by NAME --key FILE)',
        );
      }
      return `${by} (unsigned)`;
    }
    const claimed: SignedOperation = {
      operation,
      by,
      ...bound,
      expires_at: signed.expires_at,
      nonce: signed.nonce,
    };
    const now = clock();
    const verdict = operationRefusal(
      claimed,
      signed.signature,
      { operators: config.operators, keys: deps.operatorKeys },
      now,
    );
    if ('refused' in verdict) refuse(verdict.refused);
    const fresh = await redis.set(
      keys.operatorNonce(signed.nonce),
      `${operation} by ${by}`,
      'PX',
      Math.max(1, signed.expires_at - now + NONCE_MARGIN_MS),
      'NX',
    );
    if (fresh !== 'OK') refuse('this signed operation was already used (its nonce): sign it again');
    return `${by} (key ${keyFingerprint(verdict.key)})`;
  }

  async function perform(request: OperatorRequest): Promise<Omit<OperatorAnswer, 'worker'>> {
    // An operation's input can come from anyone who reaches Temporal, not only the CLI: checked before use.
    if ('symbol' in request && !SYMBOL_PATTERN.test(String(request.symbol))) {
      refuse(
        `symbol must be an upper-case exchange symbol such as BTCUSDT (got ${boundText(String(request.symbol), 40)})`,
      );
    }
    if ('plan_id' in request && !PLAN_ID.test(String(request.plan_id))) {
      refuse(`plan_id must be 16 lowercase hex characters (got ${boundText(String(request.plan_id), 40)})`);
    }
    if ('by' in request && !APPROVER_NAME.test(String(request.by))) {
      refuse(`by must be a name of letters, digits, _ . - (got ${boundText(String(request.by), 40)})`);
    }
    switch (request.operation) {
      case 'position':
        return { result: await positionView(reconcileDeps, request.symbol) };
      case 'reconcile_preview':
        return { result: await previewReconcile(reconcileDeps, request.symbol) };
      case 'reconcile': {
        if (request.signed && !request.expected) refuse('a signed reconcile names the positions shown');
        const recorded = await authorize(
          'reconcile',
          request.by,
          { symbol: request.symbol, ...(request.expected ? { shown: request.expected } : {}) },
          request.signed,
        );
        const client = await deps.client();
        // The worker compares what was shown with what it reads now: a stale yes changes nothing.
        const expected = request.expected as ReconcilePreview | undefined;
        const done = await reconcileLedger(reconcileDeps, client, request.symbol, recorded, expected).catch(
          (err: unknown) => {
            throw err instanceof ReconcileStale ? ApplicationFailure.nonRetryable(err.message, 'ReconcileStale') : err;
          },
        );
        const woken = await retryBlocked(client, { symbol: request.symbol }, request.by);
        return { result: { ...done, woken }, recorded_as: recorded };
      }
      case 'kill_switch': {
        const recorded = request.on ? request.by : await authorize('kill_switch_off', request.by, {}, request.signed);
        await setKillSwitch(redis, keys, request.on, recorded);
        return { result: { kill_switch: request.on ? 'on' : 'off' }, recorded_as: recorded };
      }
      case 'deployed': {
        const client = await deps.client();
        const audited = await recordDeploy(client, redis, config, request).catch((err: unknown) => {
          throw err instanceof DeployRefused ? ApplicationFailure.nonRetryable(err.message, 'Refused') : err;
        });
        return { result: audited, recorded_as: request.by };
      }
      case 'reset': {
        const client = await deps.client();
        await refuseUnlessFailed(client, request.plan_id).catch((err: unknown) => {
          throw err instanceof ResetRefused ? ApplicationFailure.nonRetryable(err.message, 'Refused') : err;
        });
        const reset = await resetFailedPlan(client, redis, keys, request.plan_id, request.by);
        return { result: reset, recorded_as: request.by };
      }
    }
  }

  return {
    async performOperation(request: OperatorRequest): Promise<OperatorAnswer> {
      const answer = await perform(request);
      if (answer.recorded_as !== undefined) {
        deps.logger?.info(`worker: operator ${request.operation} by ${answer.recorded_as}`);
      }
      return { worker: workerIdentity(config, buildId), ...answer };
    },
  };
}
