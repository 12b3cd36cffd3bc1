/** One batch: counts, timings, billing, validation errors, files, cancel/delete, its images. */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, downloadFile } from './api.js';
import {
  batchProgress,
  ConfirmButton,
  errorNotice,
  Facts,
  fmtNumber,
  html,
  isFinished,
  Loading,
  Notice,
  ProgressBar,
  StatusBadge,
  setFlash,
  Time,
  usePageTitle,
  usePolling,
} from './components.js';
import { Gallery } from './user-gallery.js';

const LIVE_MS = 1500;
const TIMINGS = [
  ['created_at', 'Created'],
  ['in_progress_at', 'In progress'],
  ['finalizing_at', 'Finalizing'],
  ['completed_at', 'Completed'],
  ['cancelling_at', 'Cancelling'],
  ['cancelled_at', 'Cancelled'],
  ['failed_at', 'Failed'],
  ['expired_at', 'Expired'],
  ['expires_at', 'Expires'],
];

export function BatchPage({ id }) {
  usePageTitle(id);
  const [batch, setBatch] = useState(null);
  const [missing, setMissing] = useState(false);
  const [notice, setNotice] = useState(null);
  const path = `v1/image-batches/${encodeURIComponent(id)}`;

  const load = useCallback(async () => {
    try {
      setBatch(await api(path));
    } catch (err) {
      if (err.status === 404) setMissing(true);
      else setNotice(errorNotice(err));
    }
  }, [path]);
  useEffect(() => {
    setBatch(null);
    setMissing(false);
    void load();
  }, [load]);
  usePolling(load, LIVE_MS, Boolean(batch && !isFinished(batch.status)));

  const cancel = async () => {
    try {
      setBatch(await api(`${path}/cancel`, { method: 'POST' }));
      setNotice({ kind: 'info', text: 'Cancelling: what Vertex finished is kept and billed, the rest refunded.' });
    } catch (err) {
      setNotice(errorNotice(err));
    }
  };
  const remove = async () => {
    try {
      await api(path, { method: 'DELETE' });
      setFlash({ kind: 'success', text: `Deleted ${id} and its files.` });
      location.hash = '#/batches';
    } catch (err) {
      setNotice(errorNotice(err));
    }
  };
  const save = async (fileId, name) => {
    try {
      await downloadFile(fileId, name);
    } catch (err) {
      setNotice(errorNotice(err));
    }
  };

  return html`<main id="main">
    <p class="crumbs"><a href="#/batches">← Batches</a></p>
    <h1 tabindex="-1">Batch <span class="mono">${id}</span></h1>
    <${Notice} notice=${notice} />
    ${
      missing
        ? html`<p class="empty">No batch ${id} here: it was deleted, or it is not yours.</p>`
        : batch === null
          ? html`<${Loading} what="Loading the batch" />`
          : html`<${BatchDetails} batch=${batch} onCancel=${cancel} onDelete=${remove} onDownload=${save} />`
    }
  </main>`;
}

function BatchDetails({ batch: b, onCancel, onDelete, onDownload }) {
  const c = b.request_counts;
  const cancellable = b.status === 'validating' || b.status === 'in_progress';
  const errors = b.errors?.data ?? [];
  return html`
    <div class="batch-head">
      <span>Status <${StatusBadge} status=${b.status} /></span>
      <${ProgressBar} value=${batchProgress(b)} label=${`Progress of ${b.id}`} />
    </div>
    <div class="grid">
      <section class="card" aria-labelledby="counts-title">
        <h2 id="counts-title">Requests</h2>
        <${Facts}
          label="Request counts"
          items=${[
            ['Total', fmtNumber(c.total)],
            ['Completed', fmtNumber(c.completed)],
            ['Failed', fmtNumber(c.failed)],
            ['Model', b.model ?? '—'],
          ]}
        />
      </section>
      <section class="card" aria-labelledby="billing-title">
        <h2 id="billing-title">Billing <span class="unit">(quota units)</span></h2>
        <${Facts}
          label="Billing"
          items=${[
            ['Pre-deducted', fmtNumber(b.billing.pre_deducted)],
            ['Settled', fmtNumber(b.billing.settled)],
            ['Refunded', fmtNumber(b.billing.refunded)],
          ]}
        />
      </section>
      <section class="card" aria-labelledby="timings-title">
        <h2 id="timings-title">Timings</h2>
        <${Facts}
          label="Timings"
          items=${TIMINGS.filter(([k]) => b[k] !== null).map(([k, label]) => [label, html`<${Time} at=${b[k]} />`])}
        />
      </section>
    </div>
    <section class="actions" aria-label="Files and actions">
      ${
        b.output_file_id
          ? html`<button type="button" class="primary" onClick=${() => onDownload(b.output_file_id, `${b.id}-output.jsonl`)}>
              Download output
            </button>`
          : null
      }
      ${
        b.error_file_id
          ? html`<button type="button" onClick=${() => onDownload(b.error_file_id, `${b.id}-errors.jsonl`)}>
              Download errors
            </button>`
          : null
      }
      ${
        cancellable
          ? html`<${ConfirmButton}
              label="Cancel batch"
              confirmLabel="Yes, cancel it"
              question="Cancel this batch? Finished images are kept and billed, the rest refunded."
              onConfirm=${onCancel}
            />`
          : null
      }
      ${
        isFinished(b.status)
          ? html`<${ConfirmButton}
              label="Delete batch"
              confirmLabel="Yes, delete it"
              question="Delete this batch and its files for good?"
              danger=${true}
              onConfirm=${onDelete}
            />`
          : null
      }
    </section>
    ${errors.length ? html`<${ValidationErrors} errors=${errors} />` : null}
    ${b.metadata && Object.keys(b.metadata).length ? html`<${Metadata} metadata=${b.metadata} />` : null}
    ${b.output_file_id ? html`<${Gallery} batchId=${b.id} />` : null}
  `;
}

function ValidationErrors({ errors }) {
  return html`<section aria-labelledby="errors-title">
    <h2 id="errors-title">Errors by line</h2>
    <table class="stack">
      <caption class="visually-hidden">Validation errors of the input file, by line</caption>
      <thead>
        <tr>
          <th scope="col">Line</th>
          <th scope="col">Code</th>
          <th scope="col">Parameter</th>
          <th scope="col">Message</th>
        </tr>
      </thead>
      <tbody>
        ${errors.map(
          (e) => html`<tr>
            <td data-label="Line">${e.line ?? '—'}</td>
            <td data-label="Code" class="mono">${e.code}</td>
            <td data-label="Parameter" class="mono">${e.param ?? '—'}</td>
            <td data-label="Message">${e.message}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

function Metadata({ metadata }) {
  return html`<section aria-labelledby="metadata-title">
    <h2 id="metadata-title">Metadata</h2>
    <${Facts} label="Metadata" items=${Object.entries(metadata).map(([k, v]) => [k, String(v)])} />
  </section>`;
}
