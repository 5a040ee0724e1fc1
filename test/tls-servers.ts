import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer } from 'node:tls';
import { Redis } from 'ioredis';
import { freePort, redisServerPath } from '../cli/servers';

/** PEM files made by `openssl` for one test run: nothing secret is committed. */
export interface TestCertificates {
  /** The CA that signed the servers' and the client's certificates. */
  ca: string;
  /** For 127.0.0.1 and localhost. */
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Another CA, and a client certificate it signed: trusted by no server here. */
  otherCa: string;
  otherClientCert: string;
  otherClientKey: string;
}

const OPENSSL_CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = permit-chain test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
`;

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Two CAs, a server certificate and a client certificate from the first, a client certificate from the second. */
export function makeCertificates(dir: string): TestCertificates {
  const config = join(dir, 'openssl.cnf');
  writeFileSync(config, OPENSSL_CONFIG);
  const path = (name: string) => join(dir, name);
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  // prettier-ignore
  const makeCa = (name: string) =>
    openssl(['req', '-x509', '-config', config, '-extensions', 'ca', ...newKey, '-days', '1', '-subj', `/CN=${name}`,
      '-keyout', path(`${name}.key`), '-out', path(`${name}.crt`)]);
  // prettier-ignore
  const makeLeaf = (ca: string, name: string, extensions: 'server' | 'client') => {
    openssl(['req', '-new', '-config', config, ...newKey, '-subj', `/CN=${name}`,
      '-keyout', path(`${name}.key`), '-out', path(`${name}.csr`)]);
    openssl(['x509', '-req', '-in', path(`${name}.csr`), '-CA', path(`${ca}.crt`), '-CAkey', path(`${ca}.key`),
      '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '1', '-extfile', config,
      '-extensions', extensions, '-out', path(`${name}.crt`)]);
  };
  makeCa('ca');
  makeCa('other-ca');
  makeLeaf('ca', 'localhost', 'server');
  makeLeaf('ca', 'client', 'client');
  makeLeaf('other-ca', 'other-client', 'client');
  return {
    ca: path('ca.crt'),
    serverCert: path('localhost.crt'),
    serverKey: path('localhost.key'),
    clientCert: path('client.crt'),
    clientKey: path('client.key'),
    otherCa: path('other-ca.crt'),
    otherClientCert: path('other-client.crt'),
    otherClientKey: path('other-client.key'),
  };
}

export interface RunningServer {
  port: number;
  stop(): Promise<void>;
}

/**
 * Debian's redis-server on loopback, TLS only (`--port 0`), asking every client for a certificate from the test
 * CA, with the default user off and one ACL user with a password.
 */
export async function startTlsRedis(
  certs: TestCertificates,
  account: { user: string; password: string },
): Promise<RunningServer> {
  const port = await freePort();
  // prettier-ignore
  const args = ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.ca,
    '--tls-auth-clients', 'yes', '--user', 'default', 'off',
    '--user', account.user, 'on', `>${account.password}`, '~*', '&*', '+@all'];
  const child = spawn(redisServerPath(), args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const stop = () =>
    new Promise<void>((done) => {
      if (child.exitCode !== null) return done();
      child.once('exit', () => done());
      child.kill('SIGTERM');
    });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = new Redis({
      port,
      host: '127.0.0.1',
      username: account.user,
      password: account.password,
      tls: { ca: readFileSync(certs.ca), cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) },
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => undefined); // not up yet is the answer here
    const up = await probe
      .connect()
      .then(() => probe.ping())
      .then((pong) => pong === 'PONG')
      .catch(() => false);
    probe.disconnect();
    if (up) return { port, stop };
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server with TLS did not answer on port ${port} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A TLS terminator in front of a plain-text server (the Temporal dev server): it asks for a client certificate and
 * refuses the handshake without one from the test CA, negotiates ALPN `h2` as a gRPC client requires (Debian's
 * stunnel 5.68 does not, and the worker's Rust client then refuses it), and pipes the bytes through.
 */
export async function startMtlsTerminator(certs: TestCertificates, target: string): Promise<RunningServer> {
  const split = target.lastIndexOf(':');
  const [host, targetPort] = [target.slice(0, split), Number(target.slice(split + 1))];
  const open = new Set<Socket>();
  const server = createServer(
    {
      key: readFileSync(certs.serverKey),
      cert: readFileSync(certs.serverCert),
      ca: readFileSync(certs.ca),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    },
    (client) => {
      const upstream = connect(targetPort, host);
      open.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
        open.delete(client);
        open.delete(upstream);
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    },
  );
  server.on('tlsClientError', () => undefined); // a refused client is what some tests are about
  const port = await freePort();
  await new Promise<void>((done) => server.listen(port, '127.0.0.1', done));
  return {
    port,
    stop: () =>
      new Promise<void>((done) => {
        for (const socket of open) socket.destroy();
        server.close(() => done());
      }),
  };
}
