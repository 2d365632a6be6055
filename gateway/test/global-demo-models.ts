import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../src/config/config.js';
import { repoRoot, workerSourceRoot } from '../src/infra/paths.js';
import { testEnv } from './helpers/env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    demoModels: string;
  }
}

/**
 * The demo models (as `npm start` prepares them) for tests that run real
 * inference through the gateway. Built once into var/test-models and reused:
 * the command skips models already present and intact.
 */
export default async function setup(project: TestProject): Promise<void> {
  const target = join(repoRoot, 'var', 'test-models');
  const python = loadConfig(testEnv()).workerPython;
  await promisify(execFile)(python, ['-m', 'device_ops_worker_tools.demo_models', '--model-directory', target], {
    env: { ...process.env, PYTHONPATH: workerSourceRoot, HF_HUB_OFFLINE: '1' },
    timeout: 300_000,
  });
  project.provide('demoModels', target);
}
