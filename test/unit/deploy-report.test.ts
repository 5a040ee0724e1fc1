import { describe, expect, it } from 'vitest';
import { formatDeploymentReport, versionLine } from '../../cli/commands/deployments';

describe('permit-chain deploy status, as an operator reads it', () => {
  it.each([
    [{ status: 'draining', running_plans: 12 }, 'build b1: draining, 12 plans running on it'],
    [{ status: 'draining', running_plans: 1 }, 'build b1: draining, 1 plan running on it'],
    [{ status: 'drained', running_plans: 0 }, 'build b1: drained, safe to stop its workers'],
    [{ status: 'current', running_plans: 3 }, 'build b1: current, 3 plans running on it'],
    [{ status: 'ramping', running_plans: 0 }, 'build b1: ramping, 0 plans running on it'],
    [
      { status: 'inactive', running_plans: 0 },
      'build b1: inactive, no plans on it (safe to stop its workers unless it is to be deployed)',
    ],
    [{ status: 'inactive', running_plans: 2 }, 'build b1: inactive, 2 plans running on it'],
  ] as const)('%j', (version, line) => {
    expect(versionLine({ build_id: 'b1', ...version })).toBe(line);
  });

  it('leads with the routing: the current build and the ramping one with its share', () => {
    const text = formatDeploymentReport({
      deployment: 'permit-chain',
      current_build_id: 'b2',
      ramping_build_id: 'b3',
      ramping_percentage: 10,
      versions: [
        { build_id: 'b3', status: 'ramping', running_plans: 1 },
        { build_id: 'b2', status: 'current', running_plans: 4 },
      ],
    });
    expect(text.split('\n')).toEqual([
      'deployment permit-chain: current build b2, ramping build b3 at 10%',
      'build b3: ramping, 1 plan running on it',
      'build b2: current, 4 plans running on it',
    ]);
  });

  it('says when no build was ever made current', () => {
    expect(formatDeploymentReport({ deployment: 'd', current_build_id: null, versions: [] })).toBe(
      'deployment d: current build none',
    );
  });
});
