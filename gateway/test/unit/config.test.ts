import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, describeSettings, loadConfig } from '../../src/config/config.js';
import { repoRoot } from '../../src/infra/paths.js';

const SECRET = 'x'.repeat(32);

describe('config', () => {
  it('applies documented defaults and freezes the result', () => {
    const config = loadConfig({ JWT_SECRET: SECRET });
    expect(config.port).toBe(8080);
    expect(config.workerCount).toBe(1);
    expect(config.workerAddresses).toBeUndefined();
    expect(config.logLevel).toBe('info');
    expect(config.workerPython).toBe(join(repoRoot, 'python-workers/.venv/bin/python'));
    expect(config.modelDirectory).toBe(join(repoRoot, 'var/models'));
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('refuses a missing JWT_SECRET, naming the variable', () => {
    expect(() => loadConfig({})).toThrow(ConfigError);
    expect(() => loadConfig({})).toThrow(/JWT_SECRET is required/);
  });

  it('refuses a JWT_SECRET shorter than 32 characters without echoing it', () => {
    const short = 'short-secret-value';
    try {
      loadConfig({ JWT_SECRET: short });
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).toMatch(/JWT_SECRET must be at least 32 characters/);
      expect((error as Error).message).not.toContain(short);
    }
  });

  it('names every bad variable at once', () => {
    try {
      loadConfig({ JWT_SECRET: SECRET, PORT: 'eighty', WORKER_COUNT: '0', WORKER_ADDRESSES: 'nohostport' });
      expect.unreachable();
    } catch (error) {
      const problems = (error as ConfigError).problems.join('\n');
      expect(problems).toMatch(/^PORT /m);
      expect(problems).toMatch(/^WORKER_COUNT /m);
      expect(problems).toMatch(/^WORKER_ADDRESSES /m);
    }
  });

  it('parses WORKER_ADDRESSES as a list of host:port', () => {
    const config = loadConfig({ JWT_SECRET: SECRET, WORKER_ADDRESSES: 'worker-a:50051, 10.0.0.7:50052' });
    expect(config.workerAddresses).toEqual(['worker-a:50051', '10.0.0.7:50052']);
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ JWT_SECRET: SECRET, PORT: '', JWT_ISSUER: '' })).toMatchObject({ port: 8080, jwtIssuer: undefined });
  });

  it('has every setting named and explained in .env.example', () => {
    const example = readFileSync(join(repoRoot, '.env.example'), 'utf8');
    for (const setting of describeSettings()) {
      expect(example, setting.env).toMatch(new RegExp(`^#?\\s*${setting.env}=`, 'm'));
    }
  });

  it('ships .env.example without a usable secret', () => {
    const example = readFileSync(join(repoRoot, '.env.example'), 'utf8');
    expect(example).toMatch(/^JWT_SECRET=$/m);
  });
});
