// LIVEMERGE_DEPLOYMENT / LIVEMERGE_BUILD_ID: a worker is versioned with both, unversioned with neither.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, workerDeploymentVersion } from '../../src/config';
import { deploymentOptions } from '../../src/workers/versioning';

describe('worker deployment configuration', () => {
  it('is unversioned without either variable', () => {
    const config = loadConfig({});
    expect(workerDeploymentVersion(config)).toBeUndefined();
    expect(deploymentOptions(undefined)).toEqual({});
  });

  it('is one PINNED deployment version with both', () => {
    const v = workerDeploymentVersion(
      loadConfig({ LIVEMERGE_DEPLOYMENT: 'livemerge', LIVEMERGE_BUILD_ID: ' 0.2.0-abc ' }),
    );
    expect(v).toEqual({ deploymentName: 'livemerge', buildId: '0.2.0-abc' });
    expect(deploymentOptions(v)).toEqual({
      workerDeploymentOptions: {
        useWorkerVersioning: true,
        version: { deploymentName: 'livemerge', buildId: '0.2.0-abc' },
        defaultVersioningBehavior: 'PINNED',
      },
    });
  });

  it('refuses one without the other, and a deployment name with a dot', () => {
    for (const env of [{ LIVEMERGE_DEPLOYMENT: 'livemerge' }, { LIVEMERGE_BUILD_ID: 'b1' }])
      expect(() => workerDeploymentVersion(loadConfig(env))).toThrow(ConfigError);
    // The CLI's `deployment` commands need only the name.
    expect(loadConfig({ LIVEMERGE_DEPLOYMENT: 'livemerge' }).deploymentName).toBe('livemerge');
    expect(() => loadConfig({ LIVEMERGE_DEPLOYMENT: 'a.b' })).toThrow(ConfigError);
  });
});
