import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument, YAMLMap, YAMLSeq, type Tags } from 'yaml';

/**
 * Enough of the Compose Specification's loading rules to check our files
 * without Docker: YAML with merge keys and the `!reset` / `!override` tags,
 * interpolation from an environment (`${VAR}`, `${VAR:-default}`,
 * `${VAR:?error}`, `$$`…), `extends`, relative paths made absolute against the
 * file that names them, and the merge of several files in order
 * (https://github.com/compose-spec/compose-spec/blob/main/13-merge.md).
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

const TAG = '__compose_tag__';
type TagKind = 'reset' | 'override';

class TaggedSeq extends YAMLSeq {
  kind: TagKind = 'override';
  // A marker object where a list would be; the loader below resolves it.
  override toJSON(arg?: unknown, ctx?: Parameters<YAMLSeq['toJSON']>[1]): any {
    return { [TAG]: this.kind, value: super.toJSON(arg as string, ctx) };
  }
}
class TaggedMap extends YAMLMap {
  kind: TagKind = 'override';
  override toJSON(arg?: unknown, ctx?: Parameters<YAMLMap['toJSON']>[1]): any {
    return { [TAG]: this.kind, value: super.toJSON(arg as string, ctx) };
  }
}

const composeTags = (['reset', 'override'] as const).flatMap((kind) => [
  {
    tag: `!${kind}`,
    collection: 'seq' as const,
    nodeClass: TaggedSeq,
    resolve: (seq: YAMLSeq) => Object.assign(new TaggedSeq(), { items: seq.items, kind }),
  },
  {
    tag: `!${kind}`,
    collection: 'map' as const,
    nodeClass: TaggedMap,
    resolve: (map: YAMLMap) => Object.assign(new TaggedMap(), { items: map.items, kind }),
  },
  { tag: `!${kind}`, resolve: (value: string) => ({ [TAG]: kind, value: value === '' || value === 'null' ? null : value }) },
]) as unknown as Tags;

const isObject = (value: unknown): value is JsonObject => typeof value === 'object' && value !== null && !Array.isArray(value);
const tagOf = (value: unknown): { kind: TagKind; value: Json } | null =>
  isObject(value) && typeof value[TAG] === 'string' ? { kind: value[TAG] as TagKind, value: value.value ?? null } : null;

/** A compose file as YAML data, merge keys applied, `!reset`/`!override` kept as markers. */
export function readComposeYaml(file: string): JsonObject {
  const doc = parseDocument(readFileSync(file, 'utf8'), { customTags: composeTags, merge: true });
  if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
  if (doc.warnings.length > 0) throw new Error(`${file}: ${doc.warnings.map((e) => e.message).join('; ')}`);
  const data = doc.toJS({ maxAliasCount: 1000 }) as unknown;
  if (!isObject(data)) throw new Error(`${file}: not a mapping`);
  return data;
}

/** The markers resolved as a single file means them: `!override` is its value, `!reset` removes the key. */
export function withoutTags(value: Json): Json {
  if (Array.isArray(value)) return value.map(withoutTags);
  if (!isObject(value)) return value;
  const tag = tagOf(value);
  if (tag) return tag.kind === 'override' ? withoutTags(tag.value) : tag.value;
  const out: JsonObject = {};
  for (const [key, item] of Object.entries(value)) {
    const itemTag = tagOf(item);
    if (itemTag?.kind === 'reset') continue;
    out[key] = withoutTags(item);
  }
  return out;
}

// --- interpolation -----------------------------------------------------------

export class InterpolationError extends Error {}

const VARIABLE = /\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/** Compose's interpolation of one string. */
export function interpolate(text: string, env: Record<string, string | undefined>): string {
  return text.replace(VARIABLE, (match, braced?: string, operator?: string, argument?: string, bare?: string) => {
    if (match === '$$') return '$';
    const name = (braced ?? bare)!;
    const value = env[name];
    const set = value !== undefined;
    const nonEmpty = set && value !== '';
    switch (operator) {
      case undefined:
        return value ?? '';
      case ':-':
        return nonEmpty ? value! : interpolate(argument ?? '', env);
      case '-':
        return set ? value! : interpolate(argument ?? '', env);
      case ':?':
        if (!nonEmpty) throw new InterpolationError(`required variable ${name} is missing a value: ${argument}`);
        return value!;
      case '?':
        if (!set) throw new InterpolationError(`required variable ${name} is missing a value: ${argument}`);
        return value!;
      case ':+':
        return nonEmpty ? interpolate(argument ?? '', env) : '';
      case '+':
        return set ? interpolate(argument ?? '', env) : '';
      default:
        throw new InterpolationError(`unsupported interpolation ${match}`);
    }
  });
}

function interpolateAll(value: Json, env: Record<string, string | undefined>): Json {
  if (typeof value === 'string') return interpolate(value, env);
  if (Array.isArray(value)) return value.map((item) => interpolateAll(item, env));
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateAll(v, env)]));
  return value;
}

// --- normalisation -------------------------------------------------------------

/** `environment`/`labels` as a mapping, whether written as a list or a mapping. */
export function asMapping(value: Json | undefined): Record<string, string | null> {
  if (value === undefined || value === null) return {};
  if (Array.isArray(value)) {
    return Object.fromEntries(
      value.map((item) => {
        const text = String(item);
        const at = text.indexOf('=');
        return at < 0 ? [text, null] : [text.slice(0, at), text.slice(at + 1)];
      }),
    );
  }
  if (!isObject(value)) throw new Error(`expected a list or mapping, got ${JSON.stringify(value)}`);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, v === null ? null : String(v)]));
}

export interface VolumeMount {
  type: string;
  source: string | undefined;
  target: string;
  readOnly: boolean;
  createHostPath?: boolean;
}

/** A service's `volumes` entry in its long form. */
export function volumeMount(entry: Json): VolumeMount {
  if (typeof entry === 'string') {
    const parts = entry.split(':');
    const [source, target, mode] = parts.length === 1 ? [undefined, parts[0]!, ''] : [parts[0]!, parts[1]!, parts[2] ?? ''];
    const isPath = source !== undefined && (source.startsWith('.') || source.startsWith('/') || source.startsWith('~'));
    return {
      type: source === undefined ? 'volume' : isPath ? 'bind' : 'volume',
      source,
      target,
      readOnly: mode.split(',').includes('ro'),
      // Docker creates a missing folder for the short syntax too, but we ask
      // for that explicitly (long syntax) where it is meant.
      createHostPath: false,
    };
  }
  if (!isObject(entry)) throw new Error(`bad volume ${JSON.stringify(entry)}`);
  const bind = isObject(entry.bind) ? entry.bind : {};
  return {
    type: String(entry.type),
    source: entry.source === undefined ? undefined : String(entry.source),
    target: String(entry.target),
    readOnly: entry.read_only === true,
    createHostPath: bind.create_host_path === true,
  };
}

const isRelativePath = (path: string) => path.startsWith('./') || path.startsWith('../') || path === '.' || path === '..';

/** Relative paths of one file's services made absolute against that file's folder. */
function absolutePaths(data: JsonObject, baseDir: string): JsonObject {
  const services = isObject(data.services) ? data.services : {};
  for (const service of Object.values(services)) {
    if (!isObject(service)) continue;
    if (typeof service.build === 'string') service.build = { context: service.build };
    if (isObject(service.build) && typeof service.build.context === 'string' && !isAbsolute(service.build.context)) {
      service.build.context = resolve(baseDir, service.build.context);
    }
    if (typeof service.env_file === 'string') service.env_file = [service.env_file];
    if (Array.isArray(service.env_file)) {
      service.env_file = service.env_file.map((entry) =>
        typeof entry === 'string' ? resolve(baseDir, entry) : isObject(entry) ? { ...entry, path: resolve(baseDir, String(entry.path)) } : entry,
      );
    }
    if (Array.isArray(service.volumes)) {
      service.volumes = service.volumes.map((entry) => {
        const mount = volumeMount(entry);
        if (mount.type !== 'bind' || mount.source === undefined || !isRelativePath(mount.source)) return entry;
        const source = resolve(baseDir, mount.source);
        return typeof entry === 'string' ? entry.replace(mount.source, source) : { ...(entry as JsonObject), source };
      });
    }
    if (isObject(service.extends) && typeof service.extends.file === 'string') {
      service.extends.file = resolve(baseDir, service.extends.file);
    }
  }
  return data;
}

// --- merge ---------------------------------------------------------------------------

const REPLACED_SEQUENCES = new Set(['command', 'entrypoint', 'test']);

function mergeValue(base: Json | undefined, override: Json, key: string): Json | undefined {
  const tag = tagOf(override);
  if (tag) return tag.kind === 'reset' ? undefined : withoutTags(tag.value);
  if (base === undefined || base === null) return withoutTags(override);
  if (key === 'environment' || key === 'labels' || key === 'extra_hosts') {
    return { ...asMapping(base), ...asMapping(withoutTags(override)) };
  }
  if (key === 'depends_on' || key === 'networks') {
    const toMap = (value: Json) => (Array.isArray(value) ? Object.fromEntries(value.map((name) => [String(name), null])) : value);
    return mergeObjects(toMap(base) as JsonObject, toMap(override) as JsonObject);
  }
  if (key === 'volumes' && Array.isArray(base) && Array.isArray(override)) {
    const byTarget = new Map(base.map((entry) => [volumeMount(entry).target, entry]));
    for (const entry of override) byTarget.set(volumeMount(entry).target, withoutTags(entry));
    return [...byTarget.values()];
  }
  if (Array.isArray(base) && Array.isArray(override)) {
    if (REPLACED_SEQUENCES.has(key)) return withoutTags(override);
    const seen = new Set(base.map((item) => JSON.stringify(item)));
    return [...base, ...override.map(withoutTags).filter((item) => !seen.has(JSON.stringify(item)))];
  }
  if (isObject(base) && isObject(override)) return mergeObjects(base, override);
  return withoutTags(override);
}

function mergeObjects(base: JsonObject, override: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [key, value] of Object.entries(override)) {
    const merged = mergeValue(base[key], value, key);
    if (merged === undefined) delete out[key];
    else out[key] = merged;
  }
  return out;
}

// --- loading -------------------------------------------------------------------

function loadFile(file: string, env: Record<string, string | undefined>): JsonObject {
  const data = interpolateAll(readComposeYaml(file), env) as JsonObject;
  const resolved = absolutePaths(data, dirname(file));
  const services = isObject(resolved.services) ? resolved.services : {};
  for (const [name, service] of Object.entries(services)) {
    if (isObject(service) && isObject(service.extends)) services[name] = extendService(service, file, env);
  }
  return resolved;
}

function extendService(service: JsonObject, file: string, env: Record<string, string | undefined>): JsonObject {
  const { extends: from, ...rest } = service;
  const spec = from as JsonObject;
  const baseFile = typeof spec.file === 'string' ? spec.file : file;
  const baseServices = loadFile(baseFile, env).services as JsonObject;
  const base = baseServices[String(spec.service)];
  if (!isObject(base)) throw new Error(`${file}: extends names service ${String(spec.service)}, which ${baseFile} does not have`);
  // depends_on is not inherited (compose spec, extends).
  const { depends_on: _ignored, ...inherited } = base;
  return mergeObjects(inherited, rest);
}

/** The compose model of `files` merged in order, interpolated with `env`. */
export function loadCompose(files: string[], env: Record<string, string | undefined>): JsonObject {
  let model: JsonObject = {};
  for (const file of files) model = mergeObjects(model, loadFile(file, env));
  return withoutTags(model) as JsonObject;
}

export const servicesOf = (model: JsonObject): Record<string, JsonObject> => (model.services ?? {}) as Record<string, JsonObject>;
