import type { ListDevicesResponse__Output } from '../generated/device_ops/v1/ListDevicesResponse.js';
import type { CallOptions, WorkerApi } from '../infra/grpc/worker-client.js';
import type { WorkerHandle, WorkerPool } from '../features/workers/worker-handle.js';

/**
 * The pool as DeviceService sees it when the bench removes the gRPC call:
 * each worker's ListDevices is called once and its answer returned again to
 * every later call, without a call; every other rpc goes to the real client.
 * The rest of the request (mapping, the response) then runs on a real
 * answer of the same shape.
 */
export function cannedListDevices(pool: WorkerPool): WorkerPool {
  const wrapped = new WeakMap<WorkerHandle, WorkerHandle>();
  const wrap = (handle: WorkerHandle): WorkerHandle => {
    let canned = wrapped.get(handle);
    if (!canned) wrapped.set(handle, (canned = cannedHandle(handle)));
    return canned;
  };
  return {
    get mode() {
      return pool.mode;
    },
    start: () => pool.start(),
    stop: () => pool.stop(),
    workers: () => pool.workers().map(wrap),
  };
}

function cannedHandle(handle: WorkerHandle): WorkerHandle {
  let real: WorkerApi | null = null;
  let canned: WorkerApi | null = null;
  return {
    id: handle.id,
    // A restarted worker has a new client: answer from the new one's first answer.
    get client() {
      if (handle.client !== real) {
        real = handle.client;
        canned = real && cannedClient(real);
      }
      return canned;
    },
    snapshot: () => handle.snapshot(),
    observeHealth: (serving) => handle.observeHealth(serving),
  };
}

function cannedClient(client: WorkerApi): WorkerApi {
  let answer: Promise<ListDevicesResponse__Output> | null = null;
  const listDevices = (options?: CallOptions) =>
    (answer ??= client.listDevices(options).catch((error: unknown) => {
      answer = null; // a failed first call is not an answer to keep
      throw error;
    }));
  return new Proxy(client, {
    get(target, key) {
      if (key === 'listDevices') return listDevices;
      const value: unknown = Reflect.get(target, key, target);
      // Bound to the real client: its methods use private fields a proxy does not have.
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
