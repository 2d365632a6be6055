/** Poll `check` until it returns a value (not undefined) or the timeout passes. */
export async function waitFor<T>(
  check: () => Promise<T | undefined>,
  { timeoutMs = 30_000, intervalMs = 100, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Whether a process is alive (one we may not signal counts as alive). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The slack a wall-clock upper bound in a test allows on top of the time the
 * mechanism under test is built to take (a deadline, a timeout): this
 * 2-core machine runs two suites side by side, and a worker's PyTorch import
 * can hold a core for seconds. A bound is written `mechanism + MACHINE_MARGIN_MS`,
 * and still fails for what it guards against (a wait for a 10 s default, a hang).
 */
export const MACHINE_MARGIN_MS = 2_000;

/** Whether `promise` has settled by the time the event loop has gone round twice (no waiting for any timer). */
export async function settledNow(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  return settled;
}
