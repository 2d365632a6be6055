import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { describeSettings } from '../../src/config/config.js';
import { envFileValue } from './helpers/env-file.js';
import { repoPath } from './helpers/repo.js';

/**
 * deploy/kubernetes/ as `kubectl apply -k` would take it: every file parses,
 * and every object refers only to objects of the set (kustomize's generated
 * Secrets included), with the probes, GPUs and worker discovery the system needs.
 */
type Obj = Record<string, any>;
const DIR = repoPath('deploy', 'kubernetes');
const kustomization = parse(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8')) as Obj;

const objects: Obj[] = (kustomization.resources as string[]).flatMap((file) =>
  parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return { ...(doc.toJS() as Obj), __file: file };
  }),
);
const generatedSecrets = new Map<string, string[]>(
  ((kustomization.secretGenerator ?? []) as Obj[]).map((generator) => {
    // Keys of an env-file generator come from its example (the real file is never committed).
    const keys = ((generator.envs ?? []) as string[]).flatMap((file) =>
      readFileSync(join(DIR, `${file}.example`), 'utf8')
        .split('\n')
        .filter((line) => /^[A-Z_][A-Z0-9_]*=/.test(line))
        .map((line) => line.slice(0, line.indexOf('='))),
    );
    const files = ((generator.files ?? []) as string[]).map((file) => file.split('=')[0]!);
    return [generator.name as string, [...keys, ...files]];
  }),
);

const ofKind = (kind: string) => objects.filter((o) => o.kind === kind);
const named = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata?.name === name);
const workloads = () => objects.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
const podLabels = (workload: Obj) => (workload.spec.template.metadata.labels ?? {}) as Record<string, string>;
const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
const selectedWorkloads = (selector: Record<string, string>) => workloads().filter((w) => selects(selector, podLabels(w)));
const containers = (workload: Obj) => workload.spec.template.spec.containers as Obj[];
const configMapKeys = (name: string) => Object.keys(named('ConfigMap', name)?.data ?? {});

describe('deploy/kubernetes', () => {
  it('lists files that exist and parse into named objects, each name once per kind', () => {
    for (const file of kustomization.resources as string[]) expect(existsSync(join(DIR, file)), file).toBe(true);
    expect(objects.length).toBeGreaterThan(10);
    const keys = objects.map((o) => `${o.kind}/${o.metadata?.name}`);
    for (const object of objects) {
      expect(object.apiVersion, object.__file).toBeTruthy();
      expect(object.metadata?.name, object.__file).toBeTruthy();
    }
    expect(new Set(keys).size).toBe(keys.length);
    expect(kustomization.namespace).toBe(named('Namespace', 'device-operations')?.metadata.name);
    for (const generator of kustomization.secretGenerator as Obj[]) {
      for (const file of [...(generator.envs ?? []).map((f: string) => `${f}.example`)]) expect(existsSync(join(DIR, file)), file).toBe(true);
    }
  });

  it('refers only to Secrets, ConfigMaps and claims of the set, with keys they have', () => {
    const problems: string[] = [];
    const secret = (name: string, key?: string) => {
      const keys = generatedSecrets.get(name) ?? Object.keys(named('Secret', name)?.stringData ?? named('Secret', name)?.data ?? {});
      if (!generatedSecrets.has(name) && !named('Secret', name)) problems.push(`Secret ${name}`);
      else if (key && !keys.includes(key)) problems.push(`Secret ${name} key ${key}`);
    };
    const configMap = (name: string, key?: string) => {
      if (!named('ConfigMap', name)) problems.push(`ConfigMap ${name}`);
      else if (key && !configMapKeys(name).includes(key)) problems.push(`ConfigMap ${name} key ${key}`);
    };
    for (const workload of workloads()) {
      const pod = workload.spec.template.spec;
      for (const container of pod.containers as Obj[]) {
        for (const from of container.envFrom ?? []) {
          if (from.secretRef) secret(from.secretRef.name);
          if (from.configMapRef) configMap(from.configMapRef.name);
        }
        for (const variable of container.env ?? []) {
          const ref = variable.valueFrom ?? {};
          if (ref.secretKeyRef) secret(ref.secretKeyRef.name, ref.secretKeyRef.key);
          if (ref.configMapKeyRef) configMap(ref.configMapKeyRef.name, ref.configMapKeyRef.key);
        }
        const volumes = new Set((pod.volumes ?? []).map((v: Obj) => v.name));
        for (const mount of container.volumeMounts ?? []) if (!volumes.has(mount.name)) problems.push(`volume ${mount.name} in ${workload.metadata.name}`);
      }
      for (const volume of pod.volumes ?? []) {
        if (volume.secret) secret(volume.secret.secretName);
        if (volume.configMap) configMap(volume.configMap.name);
        if (volume.persistentVolumeClaim && !named('PersistentVolumeClaim', volume.persistentVolumeClaim.claimName)) {
          problems.push(`PersistentVolumeClaim ${volume.persistentVolumeClaim.claimName}`);
        }
      }
    }
    for (const ingress of ofKind('Ingress')) for (const tls of ingress.spec.tls ?? []) secret(tls.secretName);
    expect(problems).toEqual([]);
  });

  it('has Services, budgets and policies that select pods of the set, on ports those pods have', () => {
    for (const workload of workloads()) {
      expect(selects(workload.spec.selector.matchLabels, podLabels(workload)), `${workload.metadata.name}: selector matches its pods`).toBe(true);
    }
    for (const service of ofKind('Service')) {
      const pods = selectedWorkloads(service.spec.selector);
      expect(pods.length, `Service ${service.metadata.name} selects pods`).toBeGreaterThan(0);
      for (const port of service.spec.ports as Obj[]) {
        const target = port.targetPort ?? port.port;
        for (const pod of pods) {
          const ports = containers(pod).flatMap((c) => c.ports ?? []);
          expect(ports.some((p: Obj) => p.name === target || p.containerPort === target), `Service ${service.metadata.name} → ${pod.metadata.name}:${target}`).toBe(true);
        }
      }
    }
    for (const budget of ofKind('PodDisruptionBudget')) {
      expect(selectedWorkloads(budget.spec.selector.matchLabels).length, `PDB ${budget.metadata.name}`).toBe(1);
    }
    for (const policy of ofKind('NetworkPolicy')) {
      expect(selectedWorkloads(policy.spec.podSelector.matchLabels).length, `NetworkPolicy ${policy.metadata.name}`).toBeGreaterThan(0);
      for (const rule of policy.spec.ingress ?? []) {
        for (const from of rule.from ?? []) {
          // An empty podSelector is every pod of the namespace; a labelled one must name pods of the set.
          if (from.podSelector?.matchLabels) expect(selectedWorkloads(from.podSelector.matchLabels).length, 'policy source pods').toBeGreaterThan(0);
        }
      }
    }
    for (const ingress of ofKind('Ingress')) {
      for (const rule of ingress.spec.rules) {
        for (const path of rule.http.paths) {
          const backend = path.backend.service;
          const service = named('Service', backend.name);
          expect(service, `Ingress backend ${backend.name}`).toBeDefined();
          expect((service!.spec.ports as Obj[]).some((p) => p.name === backend.port.name || p.port === backend.port.number)).toBe(true);
        }
      }
    }
  });

  it('autoscales the gateway Deployment, which requests the CPU the autoscaler measures', () => {
    const [hpa] = ofKind('HorizontalPodAutoscaler');
    const target = named(hpa!.spec.scaleTargetRef.kind, hpa!.spec.scaleTargetRef.name);
    expect(target?.kind).toBe('Deployment');
    expect(target?.apiVersion).toBe(hpa!.spec.scaleTargetRef.apiVersion);
    expect(containers(target!)[0]!.resources.requests.cpu).toBeDefined();
    expect(hpa!.spec.minReplicas).toBeGreaterThanOrEqual(2);
  });

  it('probes the gateway on /health/ready and /health, and the workers over gRPC health', () => {
    const gateway = containers(named('Deployment', 'gateway')!)[0]!;
    expect(gateway.readinessProbe.httpGet).toEqual({ path: '/health/ready', port: 'http' });
    expect(gateway.livenessProbe.httpGet).toEqual({ path: '/health', port: 'http' });
    expect(gateway.ports).toEqual([
      { name: 'http', containerPort: 8080 },
      { name: 'grpc', containerPort: 50051 },
    ]);
    const worker = containers(named('StatefulSet', 'worker')!)[0]!;
    const grpcPort = (worker.ports as Obj[]).find((p) => p.name === 'grpc')!.containerPort;
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) expect(worker[probe].grpc, probe).toEqual({ port: grpcPort });
  });

  it('puts workers on GPU nodes behind the headless Service the gateway resolves', () => {
    const workers = named('StatefulSet', 'worker')!;
    const worker = containers(workers)[0]!;
    expect(worker.resources.limits['nvidia.com/gpu']).toBe(1);
    expect(workers.spec.template.spec.tolerations).toEqual(expect.arrayContaining([expect.objectContaining({ key: 'nvidia.com/gpu' })]));
    const headless = named('Service', workers.spec.serviceName)!;
    expect(headless.spec.clusterIP).toBe('None');
    expect(selectedWorkloads(headless.spec.selector)).toEqual([workers]);
    const grpcPort = (headless.spec.ports as Obj[]).find((p) => p.name === 'grpc')!.port;
    expect(named('ConfigMap', 'gateway-config')!.data.WORKER_ADDRESSES).toBe(`${headless.metadata.name}:${grpcPort}`);
    const gateway = containers(named('Deployment', 'gateway')!)[0]!;
    expect(JSON.stringify(gateway.resources)).not.toContain('nvidia.com/gpu');
    // The worker gets its token and nothing else of the gateway's secrets.
    expect(worker.envFrom.some((from: Obj) => from.secretRef)).toBe(false);
  });

  it("serves the gateway's gRPC API on a Service port that only the gateway's callers may reach; workers only from the gateway", () => {
    const gateway = named('Deployment', 'gateway')!;
    const grpcPort = (containers(gateway)[0]!.ports as Obj[]).find((p) => p.name === 'grpc')!.containerPort;
    expect(named('ConfigMap', 'gateway-config')!.data.GRPC_PORT).toBe(String(grpcPort));
    const service = named('Service', 'gateway')!;
    expect(selectedWorkloads(service.spec.selector)).toEqual([gateway]);
    expect(service.spec.ports).toContainEqual(expect.objectContaining({ name: 'grpc', targetPort: 'grpc' }));
    const policies = ofKind('NetworkPolicy');
    const covering = (workload: Obj) => policies.filter((p) => selectedWorkloads(p.spec.podSelector.matchLabels).includes(workload));
    const [gatewayPolicy] = covering(gateway);
    const grpcRule = (gatewayPolicy!.spec.ingress as Obj[]).find((rule) => (rule.ports as Obj[]).some((p) => p.port === 'grpc'))!;
    // Never open to all: a rule with peers, and no peer that admits every namespace.
    expect(grpcRule.from.length).toBeGreaterThan(0);
    expect(grpcRule.from.every((peer: Obj) => peer.podSelector || peer.namespaceSelector?.matchLabels)).toBe(true);
    const worker = named('StatefulSet', 'worker')!;
    const [workerPolicy] = covering(worker);
    const workerGrpc = (workerPolicy!.spec.ingress as Obj[]).find((rule) => (rule.ports as Obj[]).some((p) => p.port === 'grpc'))!;
    expect(workerGrpc.from).toEqual([{ podSelector: { matchLabels: gateway.spec.template.metadata.labels } }]);
  });

  it('configures the gateway and workers with settings they have', () => {
    const gatewaySettings = describeSettings().map((s) => s.env);
    const gatewayKeys = [...configMapKeys('gateway-config'), ...generatedSecrets.get('device-operations-secrets')!];
    expect(gatewayKeys.filter((key) => !gatewaySettings.includes(key))).toEqual([]);
    const workerSettings = [...readFileSync(repoPath('python-workers', 'src', 'device_ops_worker', 'settings.py'), 'utf8').matchAll(/\(\s*"--[a-z-]+",\s*"([A-Z_]+)"/g)].map((m) => m[1]!);
    expect(workerSettings.length).toBeGreaterThan(10);
    expect(configMapKeys('worker-config').filter((key) => !workerSettings.includes(key) && key !== 'HF_HUB_OFFLINE')).toEqual([]);
    // The images compose builds.
    const compose = readFileSync(repoPath('docker-compose.yml'), 'utf8');
    for (const workload of workloads()) {
      const image = containers(workload)[0]!.image.split(':')[0];
      expect(compose).toContain(`image: ${image}:`);
      expect((kustomization.images as Obj[]).map((i) => i.name)).toContain(image);
    }
    expect(envFileValue(readFileSync(join(DIR, 'secrets.env.example'), 'utf8'), 'JWT_SECRET')).toBe('');
  });
});
