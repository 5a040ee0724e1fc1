import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, type ChainConfig } from './config';
import { trustedKeyFile, trustedKeyFolder } from './key-files';
import { canonicalJson } from './plan';
import type { ApproveRequest, PositionSnapshot, RejectRequest, SignedDecision } from '../contract/types';

/**
 * Approvals that prove who gave them: each approver holds an Ed25519 key pair, the worker knows the public halves
 * (`APPROVER_KEYS_DIR/NAME.pub`), and a decision counts only with a signature over the plan, the decision, the
 * positions shown and a short expiry. `node:crypto` only.
 */

/** An approver's name: also a file name, so nothing that could climb out of the keys folder. */
export const APPROVER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** How far ahead a signed decision may expire: a signature is an answer to one question, not a standing order. */
export const MAX_DECISION_LIFE_MS = 15 * 60_000;
/** What `approve`/`reject` sign by default. */
export const DEFAULT_DECISION_LIFE_MS = 5 * 60_000;

/** The bytes an approver signs: the canonical JSON of the decision (keys sorted, no white space). */
export function decisionMessage(decision: SignedDecision): Buffer {
  return Buffer.from(canonicalJson(decision), 'utf8');
}

/** Signs a decision with an approver's private key; returns the base64 signature. */
export function signDecision(decision: SignedDecision, privateKey: KeyObject): string {
  return sign(null, decisionMessage(decision), privateKey).toString('base64');
}

/** The decision a request claims to carry, rebuilt from what the Governor knows: the plan and the snapshot shown. */
export function claimedDecision(
  planId: string,
  kind: 'approve' | 'reject',
  request: Partial<ApproveRequest & RejectRequest>,
  snapshot: PositionSnapshot,
): SignedDecision {
  const decision: SignedDecision = {
    plan_id: planId,
    decision: kind,
    by: typeof request.by === 'string' ? request.by : '',
    snapshot,
    expires_at: typeof request.expires_at === 'number' ? request.expires_at : 0,
  };
  if (kind === 'approve' && typeof request.note === 'string' && request.note !== '') decision.note = request.note;
  if (kind === 'reject' && typeof request.reason === 'string') decision.reason = request.reason;
  return decision;
}

/**
 * Checks a person's decision, a pure function of its inputs: the mode, the allow-list, the signer's key, the
 * signature over this plan and this snapshot, and the expiry (unless `at` is undefined: a re-check of an approval
 * already accepted, whose signature must still hold but whose answer was given in time). Returns why not, or
 * undefined when it holds.
 */
export function decisionRefusal(
  decision: SignedDecision,
  signature: unknown,
  rules: { mode: ChainConfig['tradingMode']; approvers: readonly string[]; keys: ReadonlyMap<string, KeyObject> },
  at: number | undefined,
): string | undefined {
  if (rules.mode === 'testnet') return 'testnet mode: the Governor approves by itself';
  if (decision.by === '') return 'a decision needs a name (by)';
  if (!rules.approvers.includes(decision.by)) return 'not an approver';
  const key = rules.keys.get(decision.by);
  if (!key) return `no public key for ${decision.by} in APPROVER_KEYS_DIR`;
  if (typeof signature !== 'string' || signature === '') return 'unsigned: sign it with permit-chain approve --key';
  if (!Number.isSafeInteger(decision.expires_at) || decision.expires_at <= 0) return 'no expiry (expires_at)';
  let valid = false;
  try {
    valid = verify(null, decisionMessage(decision), key, Buffer.from(signature, 'base64'));
  } catch {
    valid = false;
  }
  if (!valid) {
    return `signature does not verify with ${decision.by}'s key for this plan, decision and the positions shown`;
  }
  if (at !== undefined && decision.expires_at <= at) {
    return `signature expired at ${new Date(decision.expires_at).toISOString()}`;
  }
  if (at !== undefined && decision.expires_at > at + MAX_DECISION_LIFE_MS) {
    return `expiry too far ahead (at most ${MAX_DECISION_LIFE_MS / 60_000} minutes)`;
  }
  return undefined;
}

/**
 * A public key's fingerprint: `SHA256:` and the base64 (no `=` padding) of the SHA-256 of its SPKI DER encoding, the
 * bytes of the `.pub` file's PEM body. By hand: `openssl pkey -pubin -in NAME.pub -outform DER | openssl dgst -sha256
 * -binary | base64 | tr -d =`.
 */
export function keyFingerprint(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  return `SHA256:${createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
}

/** The worker's start line about its approvers: each name with its key's fingerprint, `(pinned)` when pinned. */
export function approverKeysLine(
  keys: ReadonlyMap<string, KeyObject>,
  config: Pick<ChainConfig, 'approverKeysDir' | 'approverFingerprints'>,
): string {
  const each = [...keys].map(([name, key]) => {
    const pinned = config.approverFingerprints[name] !== undefined ? ' (pinned)' : '';
    return `${name} ${keyFingerprint(key)}${pinned}`;
  });
  return `worker: approver keys from ${config.approverKeysDir}: ${each.join(', ')}`;
}

type KeySettings = Pick<ChainConfig, 'tradingMode' | 'approvers' | 'approverKeysDir'> &
  Partial<Pick<ChainConfig, 'approverFingerprints'>>;

/**
 * The approvers' public keys, `APPROVER_KEYS_DIR/NAME.pub` for each name in APPROVERS. In production mode every
 * approver must have one (and there must be approvers), else the worker does not start: a plan that waits for a
 * person nobody can be is a plan lost. A key is trusted like a private key (lib/key-files.ts: owner and modes of
 * every file, link and folder on the way), no two names may share one key (one key would sign as both), and a
 * fingerprint pinned in APPROVER_FINGERPRINTS must match. Each refusal is a {@link ConfigError} naming the file.
 */
export function loadApproverKeys(config: KeySettings): Map<string, KeyObject> {
  if (config.tradingMode === 'production' && config.approvers.length === 0) {
    throw new ConfigError('config: APPROVERS must name at least one approver in production mode');
  }
  return loadNamedKeys(config.approvers, 'APPROVERS', config);
}

/**
 * The operators' public keys (`OPERATORS`), from the same folder under the same checks as the approvers': in
 * production mode each operator must have one, else the worker does not start.
 */
export function loadOperatorKeys(
  config: Pick<ChainConfig, 'tradingMode' | 'operators' | 'approverKeysDir'>,
): Map<string, KeyObject> {
  return loadNamedKeys(config.operators, 'OPERATORS', config);
}

function loadNamedKeys(
  names: readonly string[],
  setting: 'APPROVERS' | 'OPERATORS',
  config: Pick<ChainConfig, 'tradingMode' | 'approverKeysDir'> & Partial<Pick<ChainConfig, 'approverFingerprints'>>,
): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  if (names.length === 0) return keys;
  const testnet = config.tradingMode === 'testnet';
  if (config.approverKeysDir === '' || (testnet && !existsSync(config.approverKeysDir))) {
    if (testnet) return keys;
    const whose = setting === 'APPROVERS' ? "approvers'" : "operators'";
    throw new ConfigError(`config: APPROVER_KEYS_DIR must name the folder of the ${whose} NAME.pub keys`);
  }
  // Folders already found safe: the keys share most of their path.
  const checked = new Set<string>();
  trustedKeyFolder(config.approverKeysDir, checked);
  const holders = new Map<string, { name: string; file: string }>();
  for (const name of names) {
    if (!APPROVER_NAME.test(name)) throw new ConfigError(`config: ${setting} has an invalid name '${name}'`);
    const file = join(config.approverKeysDir, `${name}.pub`);
    let key: KeyObject;
    try {
      key = createPublicKey(readFileSync(trustedKeyFile(file, checked)));
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      if (testnet) continue;
      const why = existsSync(file) ? 'is not a PEM public key' : 'is missing';
      throw new ConfigError(`config: APPROVER_KEYS_DIR: ${file} ${why} (${(err as Error).message.split('\n')[0]})`);
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new ConfigError(`config: APPROVER_KEYS_DIR: ${file} is a ${key.asymmetricKeyType ?? '?'} key, not Ed25519`);
    }
    const fingerprint = keyFingerprint(key);
    const bytes = key.export({ type: 'spki', format: 'der' }).toString('base64');
    const other = holders.get(bytes);
    if (other) {
      throw new ConfigError(
        `config: APPROVER_KEYS_DIR: ${file} holds the same key as ${other.file} (${fingerprint}), which would sign as ` +
          `both ${other.name} and ${name}: give ${name} a key of their own (permit-chain keygen ${name} --out DIR)`,
      );
    }
    holders.set(bytes, { name, file });
    const pinned = setting === 'APPROVERS' ? config.approverFingerprints?.[name] : undefined;
    if (pinned !== undefined && pinned !== fingerprint) {
      throw new ConfigError(
        `config: APPROVER_FINGERPRINTS: ${name}'s key ${file} is ${fingerprint}, pinned ${pinned}: put ${name}'s ` +
          'own key there, or pin the new fingerprint if the key was changed on purpose',
      );
    }
    keys.set(name, key);
  }
  return keys;
}

/** The worker's start line about its operators: each name with its key's fingerprint. */
export function operatorKeysLine(keys: ReadonlyMap<string, KeyObject>, config: Pick<ChainConfig, 'approverKeysDir'>) {
  const each = [...keys].map(([name, key]) => `${name} ${keyFingerprint(key)}`);
  return `worker: operator keys from ${config.approverKeysDir}: ${each.join(', ')}`;
}

/**
 * What an operator signs for an operation that moves money or resumes trading: the operation, what it acts on (the
 * symbol and the positions shown, whose exchange amount is what the ledger is set to), who, an expiry and a nonce
 * the worker accepts once.
 */
export interface SignedOperation {
  operation: 'reconcile' | 'kill_switch_off';
  by: string;
  symbol?: string;
  shown?: unknown;
  expires_at: number;
  nonce: string;
}

/** Signs an operation with an operator's private key; returns the base64 signature (as `approve` signs). */
export function signOperation(operation: SignedOperation, privateKey: KeyObject): string {
  return sign(null, Buffer.from(canonicalJson(operation), 'utf8'), privateKey).toString('base64');
}

/**
 * Checks an operator's signed operation, a pure function of its inputs: the allow-list, the key, the signature over
 * exactly this operation, its expiry (not past, not too far ahead) and a nonce. Returns why not, or the signer's key.
 */
export function operationRefusal(
  operation: SignedOperation,
  signature: unknown,
  rules: { operators: readonly string[]; keys: ReadonlyMap<string, KeyObject> },
  at: number,
): { refused: string } | { key: KeyObject } {
  if (operation.by === '') return { refused: 'a signed operation needs a name (--by)' };
  if (!rules.operators.includes(operation.by)) return { refused: `${operation.by} is not in OPERATORS` };
  const key = rules.keys.get(operation.by);
  if (!key) return { refused: `no public key for ${operation.by} in APPROVER_KEYS_DIR` };
  if (typeof signature !== 'string' || signature === '') return { refused: 'unsigned: sign it with --key' };
  if (typeof operation.nonce !== 'string' || !/^[A-Za-z0-9-]{16,64}$/.test(operation.nonce)) {
    return { refused: 'no nonce (16 to 64 letters, digits or -)' };
  }
  if (!Number.isSafeInteger(operation.expires_at) || operation.expires_at <= 0) return { refused: 'no expiry' };
  let valid = false;
  try {
    valid = verify(null, Buffer.from(canonicalJson(operation), 'utf8'), key, Buffer.from(signature, 'base64'));
  } catch {
    valid = false;
  }
  if (!valid) return { refused: `signature does not verify with ${operation.by}'s key for this operation` };
  if (operation.expires_at <= at)
    return { refused: `signature expired at ${new Date(operation.expires_at).toISOString()}` };
  if (operation.expires_at > at + MAX_DECISION_LIFE_MS) {
    return { refused: `expiry too far ahead (at most ${MAX_DECISION_LIFE_MS / 60_000} minutes)` };
  }
  return { key };
}

/** Reads an approver's private key (PEM, PKCS#8); the message says which file and why not. */
export function readPrivateKey(file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileSync(file));
  } catch (err) {
    throw new ConfigError(`--key ${file}: not a readable PEM private key (${(err as Error).message.split('\n')[0]})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(`--key ${file}: not an Ed25519 key`);
  return key;
}

/**
 * Writes a new key pair for an approver: `DIR/NAME.key` (private, mode 0600) and `DIR/NAME.pub` (public, for the
 * worker's APPROVER_KEYS_DIR), and returns the public key's fingerprint (to pin in APPROVER_FINGERPRINTS). Never
 * overwrites an existing key.
 */
export function generateApproverKeys(
  name: string,
  dir: string,
): { privateFile: string; publicFile: string; fingerprint: string } {
  if (!APPROVER_NAME.test(name)) {
    throw new ConfigError(`keygen: NAME must be letters, digits, _ . - (got '${name}')`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = join(dir, `${name}.key`);
  const publicFile = join(dir, `${name}.pub`);
  for (const file of [privateFile, publicFile]) {
    if (existsSync(file)) throw new ConfigError(`keygen: ${file} exists; remove it first to make a new key`);
  }
  writeFileSync(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(publicFile, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644, flag: 'wx' });
  return { privateFile, publicFile, fingerprint: keyFingerprint(publicKey) };
}

/**
 * The payload an approver sends (signal or update): their decision on the positions they were shown, signed with
 * their private key, valid for `lifeMs`.
 */
export function signedRequest(
  planId: string,
  kind: 'approve' | 'reject',
  fields: { by: string; note?: string; reason?: string },
  snapshot: PositionSnapshot,
  privateKey: KeyObject,
  { now = Date.now(), lifeMs = DEFAULT_DECISION_LIFE_MS }: { now?: number; lifeMs?: number } = {},
): ApproveRequest | RejectRequest {
  const expires_at = now + lifeMs;
  const request = { ...fields, expires_at };
  const signature = signDecision(claimedDecision(planId, kind, request, snapshot), privateKey);
  return kind === 'approve'
    ? { by: fields.by, ...(fields.note ? { note: fields.note } : {}), expires_at, signature }
    : { by: fields.by, reason: fields.reason ?? '', expires_at, signature };
}
