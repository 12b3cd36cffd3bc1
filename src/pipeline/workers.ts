import type { Services } from '../services.ts';

export interface Workers {
  stop(): Promise<void>;
}

/** Registers the pipeline's job handlers on this process (ROLE=all or worker). */
export async function startWorkers(_s: Services): Promise<Workers> {
  return { stop: async () => {} };
}
