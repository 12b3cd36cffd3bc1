/**
 * Emulator settings from environment variables: the one parser for both the
 * standalone `npm run emulators` and the service's in-process emulators.
 */
import type { TransportFault, VertexEmulatorOptions } from './vertex-emulator.ts';
import { VERTEX_METHODS } from './vertex-emulator.ts';

export interface EmulatorSettings {
  /** DATA_DIR; the emulators keep data under `${dataDir}/gcs` and `${dataDir}/vertex`. */
  dataDir: string;
  gcsPort: number;
  vertexPort: number;
  queueMs: number;
  lineMs: number;
  slowMs: number;
  imagePadBytes: number;
  jobFault: VertexEmulatorOptions['jobFault'];
  transportFaults: TransportFault[];
}

export const EMULATOR_DEFAULTS = {
  dataDir: './data',
  gcsPort: 4443,
  vertexPort: 8090,
  queueMs: 2000,
  lineMs: 20,
  slowMs: 2000,
  imagePadBytes: 0,
  jobFault: 'none',
} as const;

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new Error(`${name} must be an integer between 0 and ${max}, got "${raw}"`);
  }
  return value;
}

const FAULT_STATUSES = new Set([429, 500, 503]);

/**
 * "GetBatchPredictionJob:3:503,CreateBatchPredictionJob:1:429": on the 3rd
 * GetBatchPredictionJob call answer 503, on the 1st create answer 429.
 */
export function parseTransportFaults(spec: string): TransportFault[] {
  const faults: TransportFault[] = [];
  for (const item of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [method, callText, statusText, ...rest] = item.split(':').map((s) => s.trim());
    const call = Number(callText);
    const status = Number(statusText);
    if (rest.length || !(VERTEX_METHODS as readonly string[]).includes(method) || !Number.isInteger(call) || call < 1 || !FAULT_STATUSES.has(status)) {
      throw new Error(
        `Invalid transport fault "${item}": expected METHOD:CALL:STATUS with METHOD one of ${VERTEX_METHODS.join(', ')}, CALL >= 1 and STATUS 429, 500 or 503`,
      );
    }
    faults.push({ method, call, status: status as TransportFault['status'] });
  }
  return faults;
}

export function emulatorSettingsFromEnv(env: Env = process.env): EmulatorSettings {
  const jobFault = (env.VERTEX_EMULATOR_JOB_FAULT?.trim() || EMULATOR_DEFAULTS.jobFault) as string;
  if (jobFault !== 'none' && jobFault !== 'fail' && jobFault !== 'stuck') {
    throw new Error(`VERTEX_EMULATOR_JOB_FAULT must be none, fail or stuck, got "${jobFault}"`);
  }
  return {
    dataDir: env.DATA_DIR?.trim() || EMULATOR_DEFAULTS.dataDir,
    gcsPort: integer(env, 'GCS_EMULATOR_PORT', EMULATOR_DEFAULTS.gcsPort, 65535),
    vertexPort: integer(env, 'VERTEX_EMULATOR_PORT', EMULATOR_DEFAULTS.vertexPort, 65535),
    queueMs: integer(env, 'VERTEX_EMULATOR_QUEUE_MS', EMULATOR_DEFAULTS.queueMs),
    lineMs: integer(env, 'VERTEX_EMULATOR_LINE_MS', EMULATOR_DEFAULTS.lineMs),
    slowMs: integer(env, 'VERTEX_EMULATOR_SLOW_MS', EMULATOR_DEFAULTS.slowMs),
    imagePadBytes: integer(env, 'VERTEX_EMULATOR_IMAGE_PAD_BYTES', EMULATOR_DEFAULTS.imagePadBytes, 256 * 1024 * 1024),
    jobFault,
    transportFaults: parseTransportFaults(env.VERTEX_EMULATOR_FAULTS ?? ''),
  };
}
