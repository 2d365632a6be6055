/**
 * The floor of the gateway's gRPC front, for gateway-bench.ts: a grpc-js
 * server with no logic whose one method, WorkerService/ListDevices, relays
 * the call to the worker over one grpc-js channel (a deadline per call) and
 * answers its reply. Both legs the gateway has, nothing else: what the
 * gateway's front costs beyond this is its own work.
 *
 *   WORKER_ADDRESS=127.0.0.1:50051 node --import tsx gateway/bench/grpc-floor-server.ts
 */
import * as grpc from '@grpc/grpc-js';
import type { ListDevicesRequest } from '../src/generated/device_ops/v1/ListDevicesRequest.js';
import { loadProtos } from '../src/infra/grpc/protos.js';

const address = process.env.WORKER_ADDRESS;
if (!address) {
  process.stderr.write('grpc-floor-server: set WORKER_ADDRESS (host:port of a worker)\n');
  process.exit(2);
}
const WorkerService = loadProtos().device_ops.v1.WorkerService;
const worker = new WorkerService(address, grpc.credentials.createInsecure());
const server = new grpc.Server();
server.addService(WorkerService.service, {
  ListDevices: (call: grpc.ServerUnaryCall<ListDevicesRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    worker.listDevices(call.request, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null, reply?: unknown) => callback(error, reply));
  },
});
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  // The line the bench waits for.
  console.log(JSON.stringify({ message: 'grpc floor listening', address: `127.0.0.1:${port}` }));
});
process.once('SIGTERM', () => {
  worker.close();
  server.tryShutdown(() => process.exit(0));
});
