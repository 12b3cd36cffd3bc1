import { createRequire } from 'node:module';

/**
 * The package's protos as JSON: the same object its clients load (one copy, from the require
 * cache). Read instead of the package's generated `protos` module, whose 16 MB of code would cost
 * the process some 130 MB of memory for a few enums.
 */
interface ProtoNamespace {
  nested?: Record<string, ProtoNamespace>;
  values?: Record<string, number>;
}
const protosJson = createRequire(import.meta.url)(
  '@google-cloud/aiplatform/build/protos/protos.json',
) as ProtoNamespace;

/** A proto enum by its full name (`google.cloud.aiplatform.v1.JobState`): name → number and number → name. */
export function protoEnum(fullName: string): Record<string, string | number> {
  let node: ProtoNamespace | undefined = protosJson;
  for (const part of fullName.split('.')) node = node?.nested?.[part];
  if (!node?.values) throw new Error(`no proto enum ${fullName}`);
  const e: Record<string, string | number> = {};
  for (const [name, value] of Object.entries(node.values)) {
    e[name] = value;
    e[value] ??= name; // aliases share a number: the first name is the canonical one
  }
  return e;
}

/**
 * The name of a proto enum value, whichever encoding the server answered with: the generated
 * clients ask for numeric enums (`enum-encoding=int`), an emulator may answer names.
 */
export const enumName = (e: Record<string, string | number>, value: unknown): string =>
  typeof value === 'number' ? String(e[value] ?? value) : String(value ?? '');
