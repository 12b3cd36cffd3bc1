import fs from 'node:fs';
import { describe, expect, it } from '@jest/globals';
import { BATCH_ERRORS, errorType, HTTP_ERRORS } from '../../src/errors/codes.ts';

/** The README's two code tables, row by row: the first column's code and the cells after it. */
function readmeTable(header: string): Map<string, string[]> {
  const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Error codes'), readme.indexOf('## Configuration'));
  const lines = section.split('\n');
  const start = lines.findIndex((l) => l.startsWith(header));
  expect(start).toBeGreaterThan(-1);
  const rows = new Map<string, string[]>();
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    const [code, ...rest] = line
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
    rows.set(code.replaceAll('`', ''), rest);
  }
  return rows;
}

describe('the README lists exactly the catalog’s codes', () => {
  it('HTTP errors, with their statuses and types', () => {
    const rows = readmeTable('| code | HTTP status | type |');
    expect([...rows.keys()].sort()).toEqual(Object.keys(HTTP_ERRORS).sort());
    for (const [code, spec] of Object.entries(HTTP_ERRORS)) {
      const [statuses, types] = rows.get(code)!;
      expect(statuses).toBe(spec.statuses.join(', '));
      expect(types).toBe([...new Set(spec.statuses.map(errorType))].map((t) => `\`${t}\``).join(', '));
    }
  });

  it('batch, line and result errors, with where they appear', () => {
    const rows = readmeTable('| code | where |');
    expect([...rows.keys()].sort()).toEqual(Object.keys(BATCH_ERRORS).sort());
    for (const [code, spec] of Object.entries(BATCH_ERRORS)) expect(rows.get(code)![0]).toBe(spec.where);
  });

  it('no code in the source is missing from the catalog', () => {
    // Batch error codes are written as `code: '…'` in the pipeline; each must be catalogued.
    const sources = [
      'src/pipeline/line-validator.ts',
      'src/pipeline/validate.ts',
      'src/pipeline/finalize.ts',
      'src/pipeline/stitcher.ts',
      'src/pipeline/output-lines.ts',
      'src/pipeline/dead-letter.ts',
    ];
    for (const file of sources) {
      const text = fs.readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8');
      for (const [, code] of text.matchAll(/code: '([a-z_]+)'/g)) expect(Object.keys(BATCH_ERRORS)).toContain(code);
      for (const [, code] of text.matchAll(/addError\('([a-z_]+)'/g)) expect(Object.keys(BATCH_ERRORS)).toContain(code);
    }
  });
});
