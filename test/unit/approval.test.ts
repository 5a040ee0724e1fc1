import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MAX_DECISION_LIFE_MS,
  claimedDecision,
  decisionRefusal,
  generateApproverKeys,
  loadApproverKeys,
  readPrivateKey,
  signedRequest,
} from '../../lib/approval';
import { ConfigError } from '../../lib/config';
import type { PositionSnapshot } from '../../contract/types';

const NOW = 1_790_000_000_000;
const PLAN = '0123456789abcdef';
const shown: PositionSnapshot = { exchange_amount: '0.062', ledger_amount: '0.002', tolerance: '0.001', taken_at: NOW };

function pair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ed25519');
}
const alice = pair();
const eve = pair();
const rules = {
  mode: 'production' as const,
  approvers: ['alice', 'bob'],
  keys: new Map([['alice', alice.publicKey]]),
};

function refusalOf(request: object, kind: 'approve' | 'reject' = 'approve', at: number | undefined = NOW) {
  const claim = request as Record<string, unknown>;
  return decisionRefusal(claimedDecision(PLAN, kind, claim, shown), claim.signature, rules, at);
}

describe('decisionRefusal: a decision counts only when it proves itself', () => {
  const signed = signedRequest(PLAN, 'approve', { by: 'alice', note: 'ok' }, shown, alice.privateKey, { now: NOW });

  it('accepts alice’s signature over this plan, this decision and the positions shown', () => {
    expect(refusalOf(signed)).toBeUndefined();
    const rejection = signedRequest(PLAN, 'reject', { by: 'alice', reason: 'no' }, shown, alice.privateKey, {
      now: NOW,
    });
    expect(refusalOf(rejection, 'reject')).toBeUndefined();
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['no name', { ...signed, by: '' }, 'a decision needs a name'],
    ['a name outside APPROVERS', { ...signed, by: 'mallory' }, 'not an approver'],
    ['an approver without a key', { ...signed, by: 'bob' }, 'no public key for bob'],
    ['no signature', { by: 'alice', expires_at: NOW + 60_000 }, 'unsigned'],
    ['an empty signature', { ...signed, signature: '' }, 'unsigned'],
    ['no expiry', { ...signed, expires_at: undefined }, 'no expiry'],
    ['garbage for a signature', { ...signed, signature: 'not base64 at all!' }, 'does not verify'],
    [
      'eve’s signature',
      signedRequest(PLAN, 'approve', { by: 'alice' }, shown, eve.privateKey, { now: NOW }),
      'does not verify',
    ],
    [
      'another plan’s signature',
      signedRequest('ffffffffffffffff', 'approve', { by: 'alice' }, shown, alice.privateKey, { now: NOW }),
      'does not verify',
    ],
    [
      'another snapshot',
      signedRequest(PLAN, 'approve', { by: 'alice' }, { ...shown, ledger_amount: '0.062' }, alice.privateKey, {
        now: NOW,
      }),
      'does not verify',
    ],
    ['an altered note', { ...signed, note: 'ok, double it' }, 'does not verify'],
    ['a later expiry than signed', { ...signed, expires_at: signed.expires_at + 1 }, 'does not verify'],
  ])('refuses %s', (_case, request, why) => {
    expect(refusalOf(request)).toContain(why);
  });

  it('refuses an approval sent as a rejection and the reverse', () => {
    expect(refusalOf(signed, 'reject')).toContain('does not verify');
  });

  it('refuses a signature at its expiry, and accepts it one millisecond before', () => {
    expect(refusalOf(signed, 'approve', signed.expires_at)).toMatch(/^signature expired at /);
    expect(refusalOf(signed, 'approve', signed.expires_at - 1)).toBeUndefined();
  });

  it('refuses an expiry further ahead than the longest allowed, and ignores expiry when re-checking', () => {
    const long = signedRequest(PLAN, 'approve', { by: 'alice' }, shown, alice.privateKey, {
      now: NOW,
      lifeMs: MAX_DECISION_LIFE_MS + 1,
    });
    expect(refusalOf(long)).toContain('expiry too far ahead');
    expect(refusalOf(signed, 'approve', undefined)).toBeUndefined();
    expect(refusalOf(signed, 'approve', signed.expires_at + 1)).toMatch(/expired/);
  });

  it('refuses every decision in testnet mode, where the Governor approves by itself', () => {
    expect(
      decisionRefusal(
        claimedDecision(PLAN, 'approve', signed, shown),
        signed.signature,
        { ...rules, mode: 'testnet' },
        NOW,
      ),
    ).toBe('testnet mode: the Governor approves by itself');
  });
});

describe('keys', () => {
  it('keygen writes a private key only its owner may read and a public key the worker loads', () => {
    const dir = mkdtempSync(join(tmpdir(), 'approval-test-'));
    const { privateFile, publicFile } = generateApproverKeys('alice', dir);
    expect(statSync(privateFile).mode & 0o777).toBe(0o600);
    expect(readPrivateKey(privateFile).asymmetricKeyType).toBe('ed25519');
    const keys = loadApproverKeys({ tradingMode: 'production', approvers: ['alice'], approverKeysDir: dir });
    expect(keys.get('alice')?.asymmetricKeyType).toBe('ed25519');
    expect(publicFile).toBe(join(dir, 'alice.pub'));
    expect(() => generateApproverKeys('alice', dir)).toThrow(/exists/);
    expect(() => generateApproverKeys('../alice', dir)).toThrow(ConfigError);
  });

  it.each<[string, Parameters<typeof loadApproverKeys>[0], RegExp]>([
    [
      'no approvers in production',
      { tradingMode: 'production', approvers: [], approverKeysDir: '' },
      /APPROVERS must name/,
    ],
    [
      'no keys folder in production',
      { tradingMode: 'production', approvers: ['alice'], approverKeysDir: '' },
      /APPROVER_KEYS_DIR must name/,
    ],
    [
      'a missing key',
      { tradingMode: 'production', approvers: ['bob'], approverKeysDir: tmpdir() },
      /bob\.pub is missing/,
    ],
    [
      'a name that climbs out of the folder',
      { tradingMode: 'production', approvers: ['../x'], approverKeysDir: tmpdir() },
      /invalid name/,
    ],
  ])('stops a worker with %s', (_case, config, message) => {
    expect(() => loadApproverKeys(config)).toThrow(message);
  });

  it('refuses a key that is not Ed25519', () => {
    const dir = mkdtempSync(join(tmpdir(), 'approval-test-'));
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(join(dir, 'alice.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    expect(() => loadApproverKeys({ tradingMode: 'production', approvers: ['alice'], approverKeysDir: dir })).toThrow(
      /not Ed25519/,
    );
  });
});
