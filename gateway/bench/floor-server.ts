/**
 * The floor the gateway's design can approach, for the layer ablation of
 * gateway-bench.ts: Express 5 with no middleware and one route,
 * GET /api/device/list, that relays ListDevices to the worker over grpc-js
 * (one channel, a deadline per call) and answers the reply as JSON. What
 * the gateway costs beyond this is its layers. The two settings the gateway
 * makes too (no ETag hashing of each body, no X-Powered-By) are made here,
 * so the floor holds no work the gateway chose not to do.
 *
 *   WORKER_ADDRESS=127.0.0.1:50051 node --import tsx gateway/bench/floor-server.ts
 */
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import express from 'express';
import type { ListDevicesResponse__Output } from '../src/generated/device_ops/v1/ListDevicesResponse.js';
import { loadProtos } from '../src/infra/grpc/protos.js';

const address = process.env.WORKER_ADDRESS;
if (!address) {
  process.stderr.write('floor-server: set WORKER_ADDRESS (host:port of a worker)\n');
  process.exit(2);
}
const worker = new (loadProtos().device_ops.v1.WorkerService)(address, grpc.credentials.createInsecure());
const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.get('/api/device/list', (_req, res, next) => {
  worker.listDevices({}, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null, reply?: ListDevicesResponse__Output) =>
    error ? next(error) : res.json(reply),
  );
});
const server = app.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  // The line the bench waits for, shaped like the gateway's own.
  console.log(JSON.stringify({ message: 'floor listening', url: `http://127.0.0.1:${port}` }));
});
process.once('SIGTERM', () => {
  worker.close();
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
