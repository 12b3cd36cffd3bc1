import fs from 'node:fs/promises';

export default async function globalTeardown() {
  const handle = (globalThis as Record<string, unknown>).__ibgPg as
    | { server: { stop(): Promise<void> }; dir: string }
    | undefined;
  if (!handle) return;
  await handle.server.stop();
  await fs.rm(handle.dir, { recursive: true, force: true });
}
