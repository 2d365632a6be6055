import type { PackageDefinition } from '@grpc/proto-loader';
import descriptor from 'protobufjs/ext/descriptor/index.js';

interface Message {
  name?: string;
  field?: { name?: string; typeName?: string }[];
  nestedType?: Message[];
  options?: { mapEntry?: boolean };
  enumType?: { name?: string }[];
}
interface File {
  name?: string;
  package?: string;
  dependency?: string[];
  messageType?: Message[];
  enumType?: { name?: string }[];
  service?: { method?: { inputType?: string; outputType?: string }[] }[];
}

const FileDescriptorProto = (descriptor as unknown as { FileDescriptorProto: { decode(b: Uint8Array): File; encode(f: File): { finish(): Uint8Array }; fromObject(o: unknown): File; toObject(f: File): File } })
  .FileDescriptorProto;

/**
 * The package definition with each file's imports declared, for server
 * reflection. proto-loader's descriptors (one file per package) carry no
 * `dependency` list, and @grpc/reflection 1.0 serves them as they are
 * (grpc/grpc-node#2958), so a client that builds the descriptors — grpcurl,
 * Postman, anything on Go or C++ protobuf — cannot resolve a type from
 * another file (google.protobuf.Struct here) and refuses every call. Map
 * entries are renamed as protoc names them (`inputs` → `InputsEntry`;
 * protobufjs names the entry after the field, which Go's protobuf refuses).
 */
export function withDeclaredImports(definition: PackageDefinition): PackageDefinition {
  const files = new Map<string, File>();
  for (const entry of Object.values(definition)) {
    for (const bytes of (entry as { fileDescriptorProtos?: Uint8Array[] }).fileDescriptorProtos ?? []) {
      const file = FileDescriptorProto.decode(bytes);
      if (file.name && !files.has(file.name)) files.set(file.name, file);
    }
  }
  for (const file of files.values()) nameMapEntries(file.messageType);
  const definedIn = new Map<string, string>();
  for (const file of files.values()) {
    const scope = file.package ? `.${file.package}` : '';
    const define = (messages: Message[] | undefined, prefix: string) => {
      for (const message of messages ?? []) {
        const name = `${prefix}.${message.name}`;
        definedIn.set(name, file.name!);
        for (const e of message.enumType ?? []) definedIn.set(`${name}.${e.name}`, file.name!);
        define(message.nestedType, name);
      }
    };
    define(file.messageType, scope);
    for (const e of file.enumType ?? []) definedIn.set(`${scope}.${e.name}`, file.name!);
  }
  const encoded = new Map<string, Uint8Array>();
  for (const file of files.values()) {
    const imports = new Set<string>();
    /** The fully-qualified name a reference means (protobufjs writes some relative), its file imported. */
    const resolve = (typeName: string | undefined, scope: string): string | undefined => {
      if (!typeName) return typeName;
      let resolved = typeName.startsWith('.') ? typeName : undefined;
      for (let outer = scope; !resolved; outer = outer.slice(0, Math.max(0, outer.lastIndexOf('.')))) {
        if (definedIn.has(`${outer}.${typeName}`)) resolved = `${outer}.${typeName}`;
        if (outer === '') break;
      }
      const home = resolved ? definedIn.get(resolved) : undefined;
      if (home && home !== file.name) imports.add(home);
      return resolved ?? typeName;
    };
    const visit = (messages: Message[] | undefined, scope: string) => {
      for (const message of messages ?? []) {
        const name = `${scope}.${message.name}`;
        for (const field of message.field ?? []) if (field.typeName) field.typeName = resolve(field.typeName, name)!;
        visit(message.nestedType, name);
      }
    };
    const scope = file.package ? `.${file.package}` : '';
    visit(file.messageType, scope);
    for (const service of file.service ?? []) {
      for (const method of service.method ?? []) {
        method.inputType = resolve(method.inputType, scope)!;
        method.outputType = resolve(method.outputType, scope)!;
      }
    }
    file.dependency = [...new Set([...(file.dependency ?? []), ...imports])];
    encoded.set(file.name!, FileDescriptorProto.encode(file).finish());
  }
  const result: PackageDefinition = {};
  for (const [name, entry] of Object.entries(definition)) {
    const protos = (entry as { fileDescriptorProtos?: Uint8Array[] }).fileDescriptorProtos;
    result[name] = protos
      ? ({ ...entry, fileDescriptorProtos: protos.map((bytes) => encoded.get(FileDescriptorProto.decode(bytes).name!) ?? bytes) } as PackageDefinition[string])
      : entry;
  }
  return result;
}

/** protoc's name for a map field's entry message: the field in CamelCase, then "Entry". */
const entryName = (field: string) => `${field.replace(/_(\w)/g, (_m, c: string) => c.toUpperCase()).replace(/^\w/, (c) => c.toUpperCase())}Entry`;

function nameMapEntries(messages: Message[] | undefined): void {
  for (const message of messages ?? []) {
    for (const field of message.field ?? []) {
      const entry = message.nestedType?.find((n) => n.options?.mapEntry && n.name === field.typeName);
      if (entry && field.name) {
        entry.name = entryName(field.name);
        field.typeName = entry.name;
      }
    }
    nameMapEntries(message.nestedType);
  }
}
