/**
 * The name of a proto enum value, whichever encoding the server answered with: the generated
 * clients ask for numeric enums (`enum-encoding=int`), an emulator may answer names.
 */
export const enumName = (e: Record<string, string | number>, value: unknown): string =>
  typeof value === 'number' ? String(e[value] ?? value) : String(value ?? '');
