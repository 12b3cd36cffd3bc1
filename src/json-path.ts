/**
 * The JSON path (`body.image_file_ids[0]`, `''` for the root) of the first string or key in a
 * parsed JSON value for which `test` holds, or null.
 */
export function findStringPath(value: unknown, test: (s: string) => boolean, path = ''): string | null {
  if (typeof value === 'string') return test(value) ? path : null;
  if (!value || typeof value !== 'object') return null;
  for (const [key, child] of Object.entries(value)) {
    const childPath = Array.isArray(value) ? `${path}[${key}]` : path ? `${path}.${key}` : key;
    if (test(key)) return childPath;
    const found = findStringPath(child, test, childPath);
    if (found !== null) return found;
  }
  return null;
}
