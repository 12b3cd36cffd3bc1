/**
 * Checks a CreateBatchPredictionJob body the way Vertex does: unknown fields
 * against the protos that @google-cloud/aiplatform ships, then the rules for
 * a Gemini batch job (required fields, jsonl formats, gs:// URIs, a known
 * publisher model, label syntax).
 */
import { createRequire } from 'node:module';
import { protobuf } from 'google-gax';
import { HttpError } from './http-util.ts';
import type { KnownModel } from './models.ts';
import { resolveModel } from './models.ts';

const require = createRequire(import.meta.url);

let jobType: protobuf.Type | undefined;

/** The BatchPredictionJob message type, loaded once from the package's protos.json. */
function batchPredictionJobType(): protobuf.Type {
  if (!jobType) {
    const json = require('@google-cloud/aiplatform/build/protos/protos.json') as protobuf.INamespace;
    const root = protobuf.Root.fromJSON(json);
    root.resolveAll();
    jobType = root.lookupType('google.cloud.aiplatform.v1.BatchPredictionJob');
  }
  return jobType;
}

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/**
 * Walks a JSON value against a message type, as the JSON transcoder in front
 * of Vertex does: a name that is not a field (in camelCase or snake_case) is
 * an error. Returns a copy with every field under its camelCase JSON name
 * (map keys, such as label keys, are data and stay as they are). Well-known
 * types (Struct, Value, Timestamp, …) are not descended.
 */
function normalizeFields(value: unknown, type: protobuf.Type, at: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new HttpError(400, `Invalid JSON payload received. Expected an object at '${at}'.`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, fieldValue] of Object.entries(value as Record<string, unknown>)) {
    const field = type.fields[key] ?? type.fields[camelCase(key)];
    if (!field) {
      throw new HttpError(400, `Invalid JSON payload received. Unknown name "${key}" at '${at}': Cannot find field.`);
    }
    const child = field.resolvedType;
    const path = `${at}.${snakeCase(field.name)}`;
    if (!(child instanceof protobuf.Type) || child.fullName.startsWith('.google.protobuf.') || fieldValue === null) {
      out[field.name] = fieldValue;
    } else if (field.map) {
      const entries = Object.entries(fieldValue as Record<string, unknown>);
      out[field.name] = Object.fromEntries(entries.map(([k, v]) => [k, normalizeFields(v, child, `${path}[${k}]`)]));
    } else if (field.repeated) {
      if (!Array.isArray(fieldValue))
        throw new HttpError(400, `Invalid JSON payload received. Expected a list at '${path}'.`);
      out[field.name] = fieldValue.map((v, i) => normalizeFields(v, child, `${path}[${i}]`));
    } else {
      out[field.name] = normalizeFields(fieldValue, child, path);
    }
  }
  return out;
}

const LABEL_KEY = /^[a-z][a-z0-9_-]{0,62}$/;
const LABEL_VALUE = /^[a-z0-9_-]{0,63}$/;
const GCS_OBJECT_URI = /^gs:\/\/[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]\/.+$/;
const GCS_PREFIX_URI = /^gs:\/\/[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](\/.*)?$/;

export interface BatchJobInput {
  displayName: string;
  model: string;
  inputConfig: { instancesFormat: string; gcsSource: { uris: string[] } };
  outputConfig: { predictionsFormat: string; gcsDestination: { outputUriPrefix: string } };
  labels?: Record<string, string>;
  [other: string]: unknown;
}

const invalid = (message: string) => new HttpError(400, message, 'INVALID_ARGUMENT');

export function validateBatchJob(body: unknown): { job: BatchJobInput; model: KnownModel } {
  const job = normalizeFields(body, batchPredictionJobType(), 'batch_prediction_job') as Partial<BatchJobInput>;
  if (typeof job.displayName !== 'string' || job.displayName.trim() === '') {
    throw invalid('BatchPredictionJob.display_name is required.');
  }
  if (job.displayName.length > 128) throw invalid('BatchPredictionJob.display_name must be at most 128 characters.');
  if (typeof job.model !== 'string' || job.model === '') throw invalid('BatchPredictionJob.model is required.');
  const model = resolveModel(job.model);
  if (!model) {
    throw invalid(
      `Publisher model \`${job.model}\` is not supported for batch prediction (known: publishers/google/models/{gemini-2.5-flash-image, gemini-3-pro-image-preview, gemini-2.0-flash-preview-image-generation}).`,
    );
  }
  const input = job.inputConfig;
  if (!input) throw invalid('BatchPredictionJob.input_config is required.');
  if (input.instancesFormat !== 'jsonl') {
    throw invalid(
      `Unsupported input format "${input.instancesFormat ?? ''}": Gemini batch prediction reads "jsonl" from Cloud Storage.`,
    );
  }
  const uris = input.gcsSource?.uris;
  if (!Array.isArray(uris) || uris.length === 0)
    throw invalid('BatchPredictionJob.input_config.gcs_source.uris must not be empty.');
  for (const uri of uris) {
    if (typeof uri !== 'string' || !GCS_OBJECT_URI.test(uri))
      throw invalid(`Invalid Cloud Storage URI "${uri}" in input_config.gcs_source.uris.`);
    if (uri.includes('*')) throw invalid(`Wildcards are not supported by the emulator: "${uri}".`);
  }
  const output = job.outputConfig;
  if (!output) throw invalid('BatchPredictionJob.output_config is required.');
  if (output.predictionsFormat !== 'jsonl') {
    throw invalid(`Unsupported output format "${output.predictionsFormat ?? ''}": use "jsonl".`);
  }
  const prefix = output.gcsDestination?.outputUriPrefix;
  if (typeof prefix !== 'string' || !GCS_PREFIX_URI.test(prefix)) {
    throw invalid(`Invalid output_config.gcs_destination.output_uri_prefix "${prefix ?? ''}": must be a gs:// URI.`);
  }
  validateLabels(job.labels);
  return { job: job as BatchJobInput, model };
}

export function validateLabels(labels: unknown): void {
  if (labels === undefined || labels === null) return;
  if (typeof labels !== 'object' || Array.isArray(labels)) throw invalid('labels must be a map of strings.');
  const entries = Object.entries(labels as Record<string, unknown>);
  if (entries.length > 64) throw invalid(`At most 64 labels are allowed, got ${entries.length}.`);
  for (const [key, value] of entries) {
    if (!LABEL_KEY.test(key)) {
      throw invalid(
        `Label key "${key}" is invalid: keys start with a lowercase letter and contain at most 63 lowercase letters, digits, "_" or "-".`,
      );
    }
    if (typeof value !== 'string' || !LABEL_VALUE.test(value)) {
      throw invalid(
        `Label value "${String(value)}" of key "${key}" is invalid: at most 63 lowercase letters, digits, "_" or "-".`,
      );
    }
  }
}
