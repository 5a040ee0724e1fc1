import { InvalidArgumentError, type Command } from 'commander';
import { BUILD_ID_PATTERN, DeployRefused, type DeploymentReport, type VersionReport } from '../../client/deployments';
import { EXIT, UsageError, type CommandContext } from './context';

/** `--ramp`: a share of new plans, 0 to 100 percent. */
function percentArg(raw: string): number {
  const value = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw.trim()) || value > 100) {
    throw new InvalidArgumentError('must be a percentage from 0 to 100, e.g. 10');
  }
  return value;
}

function plans(count: number): string {
  return count === 1 ? '1 plan' : `${count} plans`;
}

/** One build as an operator reads it: where it stands, and whether its workers may be stopped. */
export function versionLine(version: VersionReport): string {
  const running = `${plans(version.running_plans)} running on it`;
  switch (version.status) {
    case 'current':
    case 'ramping':
      return `build ${version.build_id}: ${version.status}, ${running}`;
    case 'drained':
      return `build ${version.build_id}: drained, safe to stop its workers`;
    case 'draining':
      return `build ${version.build_id}: draining, ${running}`;
    case 'inactive':
      return version.running_plans === 0
        ? `build ${version.build_id}: inactive, no plans on it (safe to stop its workers unless it is to be deployed)`
        : `build ${version.build_id}: inactive, ${running}`;
  }
}

/** The deployment's report as lines: the routing, then one line per build, newest first. */
export function formatDeploymentReport(report: DeploymentReport): string {
  const ramping = report.ramping_build_id
    ? `, ramping build ${report.ramping_build_id} at ${report.ramping_percentage ?? 0}%`
    : '';
  const head = `deployment ${report.deployment}: current build ${report.current_build_id ?? 'none'}${ramping}`;
  return [head, ...report.versions.map(versionLine)].join('\n');
}

/** Deploys: `deploy BUILD_ID [--ramp P]` and `deploy status`. */
export function addDeploymentsCommands(program: Command, ctx: CommandContext): void {
  program
    .command('deploy')
    .description(
      'deploy BUILD_ID: make it current (or ramp it) and wake the waiting plans of older builds; ' +
        'deploy status: each build of WORKER_DEPLOYMENT, current, ramping, draining or drained',
    )
    .argument('<build_id>', "the build to deploy (its workers' `permit-chain --version`), or `status`")
    .option(
      '--ramp <percent>',
      'ramp: this share of new plans starts on the build; the current one is kept',
      percentArg,
    )
    .option('--by <name>', 'who deploys (audited)', 'operator')
    .action((buildId: string, opts: { ramp?: number; by: string }) =>
      ctx.withChain(async (chain, o) => {
        if (buildId === 'status') {
          const report = await chain.deploymentReport().catch(refused);
          return o.result(formatDeploymentReport(report), report);
        }
        if (!BUILD_ID_PATTERN.test(buildId)) {
          throw new UsageError(`build_id must be a build id such as 3f9a1c0b7d2e4a61 (got ${buildId.slice(0, 40)})`);
        }
        const done = await chain
          .deploy(buildId, { by: opts.by, ...(opts.ramp !== undefined ? { rampPercentage: opts.ramp } : {}) })
          .catch(refused);
        const { deployed } = done;
        const what =
          deployed.as === 'current'
            ? `build ${buildId} is current (was ${deployed.previous_current ?? 'none'}); ` +
              `${plans(done.woken)} waiting on older builds woken`
            : `build ${buildId} ramping at ${deployed.ramp_percentage ?? 0}% beside ${done.current_build_id ?? 'none'}`;
        const audit =
          'audited' in done.audit
            ? `audited: ${done.audit.audited}`
            : `NOT audited (the deploy is done): ${done.audit.not_audited}`;
        o.result(`${what}\n${formatDeploymentReport(done)}\n${audit}`, done);
        if (!('audited' in done.audit)) ctx.setExit(EXIT.failed);
      }),
    );
}

/** A deploy the server refused (no such build polling): one line, exit 2. */
function refused(err: unknown): never {
  if (err instanceof DeployRefused) throw new UsageError(err.message);
  throw err;
}
