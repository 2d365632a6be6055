import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The repository root. This file sits at gateway/src/infra (sources, run by
 * the tests) and gateway/dist/infra (compiled), both three levels down.
 */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

export const protoRoot = join(repoRoot, 'proto');
export const workerSourceRoot = join(repoRoot, 'python-workers', 'src');
