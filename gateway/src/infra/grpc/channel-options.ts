import type { ChannelOptions, ServiceDefinition } from '@grpc/grpc-js';

const WORKER_SERVICE = 'device_ops.v1.WorkerService';

/**
 * Rpcs that are safe to send twice, as the contract marks them
 * (`option idempotency_level = NO_SIDE_EFFECTS` in worker_service.proto):
 * they read state and change nothing. Every other rpc (Infer, LoadModel,
 * UnloadModel, CancelJob, ClearMemory) is sent once.
 */
export function idempotentMethods(service: ServiceDefinition): string[] {
  return Object.values(service)
    .filter((method) => (method as { options?: { idempotency_level?: string } }).options?.idempotency_level === 'NO_SIDE_EFFECTS')
    // The path ends with the rpc's name as the proto spells it: /device_ops.v1.WorkerService/ListDevices.
    .map((method) => method.path.slice(method.path.lastIndexOf('/') + 1))
    .sort();
}

/**
 * Retries are declared in the service config, only for idempotent rpcs and
 * only on UNAVAILABLE (the call never reached a serving worker). The health
 * service is never retried: its answer must be the honest current one.
 */
function serviceConfig(service: ServiceDefinition) {
  return {
    loadBalancingConfig: [{ pick_first: {} }],
    methodConfig: [
      {
        name: idempotentMethods(service).map((method) => ({ service: WORKER_SERVICE, method })),
        retryPolicy: {
          maxAttempts: 3,
          initialBackoff: '0.1s',
          maxBackoff: '1s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  };
}

/** Keepalive as the gateway sends it; the worker's server options must permit it (a test checks both sides). */
export const WORKER_KEEPALIVE = Object.freeze({
  // Ping an idle connection every 30 s so a dead worker host is noticed
  // between calls; the worker permits pings every 10 s
  // (python-workers/src/device_ops_worker/server.py SERVER_OPTIONS).
  'grpc.keepalive_time_ms': 30_000,
  // A ping unanswered for 10 s closes the connection and fails its calls.
  'grpc.keepalive_timeout_ms': 10_000,
  // Keep pinging without calls in flight: workers are often idle.
  'grpc.keepalive_permit_without_calls': 1,
});

/** The message size limit both sides use (images, tensors). */
export const WORKER_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

const built = new WeakMap<ServiceDefinition, ChannelOptions>();

/** The options of a channel to a worker serving `service` (built once per service). */
export function workerChannelOptions(service: ServiceDefinition): ChannelOptions {
  let options = built.get(service);
  if (!options) {
    options = {
      ...WORKER_KEEPALIVE,
      'grpc.service_config': JSON.stringify(serviceConfig(service)),
      'grpc.enable_retries': 1,
      'grpc.max_receive_message_length': WORKER_MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': WORKER_MAX_MESSAGE_BYTES,
      // Reconnect quickly to a restarted local worker, but not in a tight loop.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 5_000,
    };
    built.set(service, options);
  }
  return options;
}
