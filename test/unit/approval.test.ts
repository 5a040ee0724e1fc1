import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  lchownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  MAX_DECISION_LIFE_MS,
  approverKeysLine,
  claimedDecision,
  decisionRefusal,
  generateApproverKeys,
  keyFingerprint,
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
    const { privateFile, publicFile, fingerprint } = generateApproverKeys('alice', dir);
    expect(fingerprint).toBe(keyFingerprint(createPublicKey(readFileSync(publicFile))));
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

describe('keyFingerprint', () => {
  it('is SHA256: and the unpadded base64 of the SHA-256 of the SPKI DER, as openssl computes it', () => {
    // openssl pkey -pubin -in k.pub -outform DER | openssl dgst -sha256 -binary | base64 | tr -d =
    const pem =
      '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAFioDavDOQ67U9VqAre3sKjZj9ZbBpPS5zLrVYSPuaQI=\n-----END PUBLIC KEY-----\n';
    expect(keyFingerprint(createPublicKey(pem))).toBe('SHA256:ayG7VYE9hxyrMQlmxyQga+eG1sLKvoA1GCPItc/wxlQ');
  });
});

describe('the keys folder is trusted like a private key', () => {
  const NOBODY = 65534;
  const isRoot = process.getuid?.() === 0;

  /** A fresh keys folder (mode 0700) with a key for each name. */
  function keysFolder(...names: string[]): string {
    const dir = mkdtempSync(join(tmpdir(), 'approval-keys-'));
    for (const name of names) generateApproverKeys(name, dir);
    return dir;
  }
  const production = (dir: string, approvers = ['alice', 'bob']) => ({
    tradingMode: 'production' as const,
    approvers,
    approverKeysDir: dir,
  });
  /** The one line the worker stops with, or undefined when the keys load. */
  function refusal(config: Parameters<typeof loadApproverKeys>[0]): string | undefined {
    try {
      loadApproverKeys(config);
      return undefined;
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const message = (err as Error).message;
      expect(message.split('\n')).toHaveLength(1);
      return message;
    }
  }

  it('loads keys from a folder of mode 0700 with files of mode 0644', () => {
    const dir = keysFolder('alice', 'bob');
    expect([...loadApproverKeys(production(dir)).keys()]).toEqual(['alice', 'bob']);
  });

  it('refuses a folder writable by others (0777), naming it and the fix', () => {
    const dir = keysFolder('alice', 'bob');
    chmodSync(dir, 0o777);
    expect(refusal(production(dir))).toBe(
      `config: APPROVER_KEYS_DIR: ${dir} is writable by group and others (mode 0777), who could put a key there: ` +
        `run chmod go-w ${dir}`,
    );
    // And in testnet mode too: a tampered folder is worth stopping for whatever the mode.
    expect(refusal({ ...production(dir), tradingMode: 'testnet' })).toContain('chmod go-w');
  });

  it('refuses a folder writable by its group (0770)', () => {
    const dir = keysFolder('alice', 'bob');
    chmodSync(dir, 0o770);
    expect(refusal(production(dir))).toContain(`${dir} is writable by group (mode 0770)`);
  });

  it('refuses a key file writable by others (0666), naming the file and the fix', () => {
    const dir = keysFolder('alice', 'bob');
    chmodSync(join(dir, 'alice.pub'), 0o666);
    const file = join(dir, 'alice.pub');
    expect(refusal(production(dir))).toBe(
      `config: APPROVER_KEYS_DIR: ${file} is writable by group and others (mode 0666), who could change the key: ` +
        `run chmod go-w ${file}`,
    );
  });

  it('refuses a name whose key is a link to another name’s key, and two files that hold one key', () => {
    const dir = keysFolder('bob');
    symlinkSync('bob.pub', join(dir, 'carol.pub'));
    expect(refusal(production(dir, ['bob', 'carol']))).toMatch(
      new RegExp(
        `^config: APPROVER_KEYS_DIR: ${join(dir, 'carol.pub')} holds the same key as ${join(dir, 'bob.pub')} ` +
          `\\(SHA256:[A-Za-z0-9+/]{43}\\), which would sign as both bob and carol: give carol a key of their own`,
      ),
    );
    const copied = keysFolder('bob');
    copyFileSync(join(copied, 'bob.pub'), join(copied, 'carol.pub'));
    expect(refusal(production(copied, ['bob', 'carol']))).toContain('holds the same key as');
  });

  it('accepts a keys folder that is a link to a safe folder', () => {
    const real = keysFolder('alice', 'bob');
    const link = join(mkdtempSync(join(tmpdir(), 'approval-link-')), 'keys');
    symlinkSync(real, link);
    expect([...loadApproverKeys(production(link)).keys()]).toEqual(['alice', 'bob']);
  });

  /**
   * A Kubernetes secret volume: a sticky folder writable by all (1777, root's), each key a link through `..data` to
   * a folder of the current version. Nobody else can replace an entry of root's there, so it is accepted.
   */
  function secretVolume(): string {
    const root = mkdtempSync(join(tmpdir(), 'approval-secret-'));
    const version = join(root, '..2026_12_07_15_00_00.123');
    mkdirSync(version, { mode: 0o755 });
    const made = keysFolder('alice', 'bob');
    for (const name of ['alice', 'bob']) renameSync(join(made, `${name}.pub`), join(version, `${name}.pub`));
    symlinkSync('..2026_12_07_15_00_00.123', join(root, '..data'));
    for (const name of ['alice', 'bob']) symlinkSync(`..data/${name}.pub`, join(root, `${name}.pub`));
    chmodSync(root, 0o1777);
    return root;
  }

  it('accepts the links of a Kubernetes secret volume, and refuses a version folder writable by others', () => {
    const volume = secretVolume();
    expect([...loadApproverKeys(production(volume)).keys()]).toEqual(['alice', 'bob']);
    const version = join(volume, '..2026_12_07_15_00_00.123');
    chmodSync(version, 0o777);
    expect(refusal(production(volume))).toBe(
      `config: APPROVER_KEYS_DIR: ${version} is writable by group and others (mode 0777), who could put a key ` +
        `there: run chmod go-w ${version}`,
    );
  });

  it('refuses a key linked to a file writable by others, naming that file', () => {
    const dir = keysFolder('alice');
    const elsewhere = keysFolder('bob');
    symlinkSync(join(elsewhere, 'bob.pub'), join(dir, 'bob.pub'));
    expect(refusal(production(dir))).toBeUndefined();
    chmodSync(join(elsewhere, 'bob.pub'), 0o646);
    expect(refusal(production(dir))).toContain(`${join(elsewhere, 'bob.pub')} is writable by others (mode 0646)`);
  });

  // Giving a file to another user takes root: CI runs the tests as root; elsewhere the case says why it is skipped.
  it.skipIf(!isRoot)(
    `refuses a folder, a key file and a link owned by another user (nobody), naming each and the fix${
      isRoot ? '' : ' (skipped: not root, cannot chown to nobody)'
    }`,
    () => {
      const folder = keysFolder('alice', 'bob');
      chownSync(folder, NOBODY, NOBODY);
      expect(refusal(production(folder))).toBe(
        `config: APPROVER_KEYS_DIR: ${folder} is owned by uid ${NOBODY}, not by this worker's user (uid 0) or root: ` +
          `run chown root ${folder}`,
      );
      const file = keysFolder('alice', 'bob');
      chownSync(join(file, 'alice.pub'), NOBODY, NOBODY);
      expect(refusal(production(file))).toContain(`${join(file, 'alice.pub')} is owned by uid ${NOBODY}`);
      // In a sticky folder anyone may add an entry: a link of nobody's is refused, though it leads to root's key.
      const volume = secretVolume();
      lchownSync(join(volume, 'alice.pub'), NOBODY, NOBODY);
      expect(refusal(production(volume))).toContain(`${join(volume, 'alice.pub')} is owned by uid ${NOBODY}`);
    },
  );

  it('checks pinned fingerprints: a match loads, a mismatch names the approver and both fingerprints', () => {
    const dir = keysFolder('alice', 'bob');
    const alice = keyFingerprint(createPublicKey(readFileSync(join(dir, 'alice.pub'))));
    const bob = keyFingerprint(createPublicKey(readFileSync(join(dir, 'bob.pub'))));
    expect(refusal({ ...production(dir), approverFingerprints: { alice, bob } })).toBeUndefined();
    expect(refusal({ ...production(dir), approverFingerprints: { alice: bob } })).toBe(
      `config: APPROVER_FINGERPRINTS: alice's key ${join(dir, 'alice.pub')} is ${alice}, pinned ${bob}: put ` +
        "alice's own key there, or pin the new fingerprint if the key was changed on purpose",
    );
  });

  it('names each approver with its key’s fingerprint in one line', () => {
    const dir = keysFolder('alice', 'bob');
    const keys = loadApproverKeys(production(dir));
    const alice = keyFingerprint(keys.get('alice') as KeyObject);
    const bob = keyFingerprint(keys.get('bob') as KeyObject);
    expect(approverKeysLine(keys, { approverKeysDir: dir, approverFingerprints: { bob } })).toBe(
      `worker: approver keys from ${dir}: alice ${alice}, bob ${bob} (pinned)`,
    );
  });
});
