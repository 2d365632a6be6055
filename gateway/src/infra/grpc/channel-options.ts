import type { ChannelOptions } from '@grpc/grpc-js';

const WORKER_SERVICE = 'device_ops.v1.WorkerService';

/**
 * Rpcs that are safe to send twice: they read state and change nothing.
 * Infer, LoadModel, UnloadModel, CancelJob and ClearMemory are not retried.
 */
const IDEMPOTENT_METHODS = ['GetWorkerInfo', 'ListDevices', 'ListModels', 'ValidateModel', 'GetMemoryStatus'];

/**
 * Retries are declared in the service config, only for idempotent rpcs and
 * only on UNAVAILABLE (the call never reached a serving worker). The health
 * service is never retried: its answer must be the honest current one.
 */
const SERVICE_CONFIG = {
  loadBalancingConfig: [{ pick_first: {} }],
  methodConfig: [
    {
      name: IDEMPOTENT_METHODS.map((method) => ({ service: WORKER_SERVICE, method })),
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

export const WORKER_CHANNEL_OPTIONS: ChannelOptions = {
  // Ping an idle connection every 30 s so a dead worker host is noticed
  // between calls; the worker permits pings every 10 s
  // (python-workers/src/device_ops_worker/server.py SERVER_OPTIONS).
  'grpc.keepalive_time_ms': 30_000,
  // A ping unanswered for 10 s closes the connection and fails its calls.
  'grpc.keepalive_timeout_ms': 10_000,
  // Keep pinging without calls in flight: workers are often idle.
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.service_config': JSON.stringify(SERVICE_CONFIG),
  'grpc.enable_retries': 1,
  // Match the worker's 64 MiB message limit (images, tensors).
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
  // Reconnect quickly to a restarted local worker, but not in a tight loop.
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 5_000,
};
