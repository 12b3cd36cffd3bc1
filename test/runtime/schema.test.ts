import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { migrate } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';
import { dumpSchema, SCHEMA_FILE } from '../../src/db/schema-dump.ts';
import { createTestDatabase } from '../support/service.ts';

const committedFile = path.relative(process.cwd(), SCHEMA_FILE);

/** The first line where the two texts differ, with a few lines of each from there. */
function firstDifference(expected: string, actual: string): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const excerpt = (lines: string[], sign: string) =>
    lines
      .slice(i, i + 6)
      .map((l) => `${sign} ${l}`)
      .join('\n') || `${sign} (end of file)`;
  return `first difference at line ${i + 1}:\n${excerpt(a, '-')}\n${excerpt(b, '+')}`;
}

async function migratedSchema(): Promise<string> {
  const pool = createPool(await createTestDatabase({ migrated: false }), 2);
  try {
    await migrate(pool);
    return await dumpSchema(pool);
  } finally {
    await pool.end();
  }
}

describe(`${committedFile}`, () => {
  it('is what the migrations produce', async () => {
    const committed = await fs.readFile(SCHEMA_FILE, 'utf8');
    const actual = await migratedSchema();
    if (actual !== committed) {
      throw new Error(
        `${committedFile} is not what the migrations produce: run \`npm run db:schema\` and commit the result.\n` +
          `(- ${committedFile}, + migrations)\n${firstDifference(committed, actual)}`,
      );
    }
  });

  it('loads into an empty database as the same schema', async () => {
    const committed = await fs.readFile(SCHEMA_FILE, 'utf8');
    const pool = createPool(await createTestDatabase({ migrated: false }), 2);
    try {
      await pool.query(committed);
      const reloaded = await dumpSchema(pool);
      expect(reloaded).toBe(committed);
    } finally {
      await pool.end();
    }
  });
});

describe('dumpSchema', () => {
  const objects = `
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s fine');
    CREATE DOMAIN positive AS integer NOT NULL CONSTRAINT positive_check CHECK (VALUE > 0);
    CREATE SEQUENCE tickets START 100 INCREMENT 5 MAXVALUE 100000 CYCLE;
    CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.n := NEW.n + 1; RETURN NEW; END $$;
    CREATE TABLE "Things" (
      id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      n positive,
      m mood DEFAULT 'ok',
      label text COLLATE "C",
      twice integer GENERATED ALWAYS AS (n * 2) STORED,
      parent integer REFERENCES "Things"(id) ON DELETE CASCADE,
      EXCLUDE USING btree (label WITH =)
    ) WITH (fillfactor = 70);
    COMMENT ON TABLE "Things" IS 'things'' table';
    COMMENT ON COLUMN "Things".n IS 'a count';
    CREATE UNLOGGED TABLE scratch (k text);
    CREATE INDEX things_lower ON "Things" (lower(label));
    CREATE VIEW thing_labels AS SELECT id, label FROM "Things" WHERE n > 1;
    CREATE MATERIALIZED VIEW thing_count AS SELECT count(*) AS c FROM "Things";
    CREATE UNIQUE INDEX thing_count_c ON thing_count (c);
    CREATE TRIGGER things_touch BEFORE UPDATE ON "Things" FOR EACH ROW EXECUTE FUNCTION touch();`;

  it('covers types, sequences, functions, views and triggers, and what it writes loads back the same', async () => {
    const a = createPool(await createTestDatabase({ migrated: false }), 2);
    const b = createPool(await createTestDatabase({ migrated: false }), 2);
    try {
      await a.query(objects);
      const dumped = await dumpSchema(a);
      for (const line of [
        "CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'it''s fine');",
        'CREATE DOMAIN public.positive AS integer NOT NULL\n    CONSTRAINT positive_check CHECK ((VALUE > 0));',
        '    START WITH 100\n    INCREMENT BY 5\n    NO MINVALUE\n    MAXVALUE 100000\n    CACHE 1\n    CYCLE;',
        'CREATE OR REPLACE FUNCTION public.touch()',
        '    id integer GENERATED ALWAYS AS IDENTITY NOT NULL,',
        `    m public.mood DEFAULT 'ok'::public.mood,`,
        '    label text COLLATE pg_catalog."C",',
        '    twice integer GENERATED ALWAYS AS (((n)::integer * 2)) STORED,',
        ') WITH (fillfactor=70);',
        `COMMENT ON TABLE public."Things" IS 'things'' table';`,
        'CREATE UNLOGGED TABLE public.scratch (',
        'CREATE INDEX things_lower ON public."Things" USING btree (lower(label));',
        'CREATE VIEW public.thing_labels AS\n SELECT id,',
        'CREATE MATERIALIZED VIEW public.thing_count AS',
        'CREATE TRIGGER things_touch BEFORE UPDATE ON public."Things"',
      ]) {
        expect(dumped).toContain(line);
      }
      await b.query(dumped);
      expect(await dumpSchema(b)).toBe(dumped);
    } finally {
      await a.end();
      await b.end();
    }
  });

  it('refuses what it does not cover rather than leaving it out', async () => {
    const pool = createPool(await createTestDatabase({ migrated: false }), 2);
    try {
      await pool.query(
        'CREATE TABLE t (a int); CREATE POLICY p ON t USING (a > 0); ALTER TABLE t ENABLE ROW LEVEL SECURITY',
      );
      await expect(dumpSchema(pool)).rejects.toThrow(/does not cover policy p, row level security on t/);
    } finally {
      await pool.end();
    }
  });
});
