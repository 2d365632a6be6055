import { describe, expect, it } from 'vitest';
import { DeviceSchema } from '../../src/features/devices/device-schemas.js';
import { toDevice } from '../../src/features/devices/device-service.js';

describe('worker device → REST device', () => {
  it('maps a CUDA device with every NVML reading', () => {
    const device = toDevice('worker-3', {
      id: 'GPU-8f3a',
      kind: 'DEVICE_KIND_CUDA',
      name: 'NVIDIA H100 80GB HBM3',
      memory: { totalBytes: 85_029_158_912, freeBytes: 84_000_000_000 },
      supportedDtypes: ['float16', 'bfloat16', 'float32'],
      runningJobs: 1,
      queuedJobs: 2,
      queueCapacity: 64,
      cuda: {
        index: 0,
        uuid: 'GPU-8f3a',
        computeCapability: '9.0',
        multiprocessorCount: 132,
        utilizationPercent: 0,
        memoryUtilizationPercent: 3,
        temperatureCelsius: 31,
        powerWatts: 70.5,
        powerLimitWatts: 700,
        driverVersion: '550.54.15',
        cudaRuntimeVersion: '12.4',
      },
      details: 'cuda',
    });
    expect(DeviceSchema.parse(device)).toEqual({
      id: 'GPU-8f3a',
      workerId: 'worker-3',
      kind: 'cuda',
      name: 'NVIDIA H100 80GB HBM3',
      memory: { totalBytes: 85_029_158_912, freeBytes: 84_000_000_000 },
      supportedDtypes: ['float16', 'bfloat16', 'float32'],
      cuda: {
        index: 0,
        uuid: 'GPU-8f3a',
        computeCapability: '9.0',
        multiprocessorCount: 132,
        utilizationPercent: 0,
        memoryUtilizationPercent: 3,
        temperatureCelsius: 31,
        powerWatts: 70.5,
        powerLimitWatts: 700,
        driverVersion: '550.54.15',
        cudaRuntimeVersion: '12.4',
      },
      cpu: null,
    });
  });

  it('turns readings the worker did not send into null, keeping real zeros', () => {
    const device = toDevice('worker-0', {
      id: 'GPU-1',
      kind: 'DEVICE_KIND_CUDA',
      name: 'GPU',
      memory: { totalBytes: 1, freeBytes: 0 },
      supportedDtypes: [],
      runningJobs: 0,
      queuedJobs: 0,
      queueCapacity: 0,
      cuda: { index: 1, computeCapability: '8.0', cudaRuntimeVersion: '12.4' } as never,
      details: 'cuda',
    });
    expect(device.memory.freeBytes).toBe(0);
    expect(device.cuda).toMatchObject({
      index: 1,
      uuid: null,
      utilizationPercent: null,
      temperatureCelsius: null,
      powerWatts: null,
      driverVersion: null,
    });
  });
});
