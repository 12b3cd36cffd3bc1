/** The API key user's home: the privacy policy, a new batch from a JSONL, and the batch list. */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, query, upload } from './api.js';
import {
  BATCH_STATUSES,
  batchProgress,
  errorNotice,
  fmtNumber,
  html,
  isFinished,
  Loading,
  Notice,
  Pager,
  ProgressBar,
  StatusBadge,
  Time,
  takeFlash,
  useCursorStack,
  usePageTitle,
  usePolling,
} from './components.js';

const PAGE_SIZE = 20;
/** How often a list with unfinished batches asks again. */
const LIVE_MS = 1500;

export function BatchesPage() {
  usePageTitle('Batches');
  const [privacy, setPrivacy] = useState(null);
  const [notice, setNotice] = useState(takeFlash);
  const [refresh, setRefresh] = useState(0);

  useEffect(() => {
    api('api/image-batch-privacy').then(setPrivacy, (err) => setNotice(errorNotice(err)));
  }, []);

  return html`<main id="main">
    <h1 tabindex="-1">Batches</h1>
    <${Notice} notice=${notice} />
    ${
      privacy === null
        ? html`<${Loading} />`
        : privacy.accepted
          ? html`<${UploadZone} onNotice=${setNotice} onCreated=${() => setRefresh((n) => n + 1)} />`
          : html`<${PrivacyPanel} onAccepted=${setPrivacy} onNotice=${setNotice} />`
    }
    <${BatchList} refresh=${refresh} onNotice=${setNotice} />
  </main>`;
}

function PrivacyPanel({ onAccepted, onNotice }) {
  const [busy, setBusy] = useState(false);
  const accept = async () => {
    setBusy(true);
    try {
      await api('api/image-batch-privacy', { method: 'PUT', body: { accept: true } });
      const now = await api('api/image-batch-privacy');
      onNotice({ kind: 'success', text: 'Privacy policy accepted: you can create batches now.' });
      onAccepted(now);
    } catch (err) {
      onNotice(errorNotice(err));
      setBusy(false);
    }
  };
  return html`<section class="card" aria-labelledby="privacy-title">
    <h2 id="privacy-title">Before your first batch</h2>
    <p>
      A batch sends its prompts and reference images to Google Vertex AI, which generates the images. The service
      keeps your input, output and error files until they expire or you delete the batch. Accept this once to create
      batches.
    </p>
    <button type="button" class="primary" disabled=${busy} onClick=${accept}>Accept the privacy policy</button>
  </section>`;
}

function UploadZone({ onNotice, onCreated }) {
  const [dragging, setDragging] = useState(false);
  const [sent, setSent] = useState(null);
  const input = useRef(null);

  const send = async (files) => {
    if (!files || files.length === 0) return;
    if (files.length > 1) return onNotice({ kind: 'error', text: 'Drop one JSONL file at a time.' });
    const file = files[0];
    const form = new FormData();
    form.append('purpose', 'image_batch');
    form.append('file', file, file.name);
    setSent(0);
    onNotice({ kind: 'info', text: `Uploading ${file.name}…` });
    try {
      const batch = await upload('v1/image-files', form, setSent);
      onNotice({ kind: 'success', text: `Created ${batch.id} from ${file.name}: ${batch.status.replace('_', ' ')}.` });
      onCreated(batch);
    } catch (err) {
      onNotice(errorNotice(err));
    } finally {
      setSent(null);
      if (input.current) input.current.value = '';
    }
  };

  const onDrop = (e) => {
    e.preventDefault();
    setDragging(false);
    void send(e.dataTransfer?.files);
  };
  const onDragOver = (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
    setDragging(true);
  };

  return html`<section aria-labelledby="upload-title">
    <h2 id="upload-title">New batch</h2>
    <label
      class=${`dropzone${dragging ? ' dragging' : ''}${sent !== null ? ' busy' : ''}`}
      for="batch-file"
      onDragOver=${onDragOver}
      onDragEnter=${onDragOver}
      onDragLeave=${() => setDragging(false)}
      onDrop=${onDrop}
    >
      <span class="dropzone-title">Drop a JSONL file here, or choose one</span>
      <span class="hint">One image request per line, as in the README; the upload creates the batch.</span>
      <input
        id="batch-file"
        class="visually-hidden-file"
        type="file"
        accept=".jsonl,.ndjson,.txt,application/jsonl,application/x-ndjson,text/plain"
        disabled=${sent !== null}
        onChange=${(e) => send(e.currentTarget.files)}
      />
    </label>
    ${sent !== null ? html`<${ProgressBar} value=${Math.round(sent * 100)} label="Upload progress" />` : null}
  </section>`;
}

function BatchList({ refresh, onNotice }) {
  const [status, setStatus] = useState('');
  const cursors = useCursorStack();
  const [page, setPage] = useState(null);

  const load = useCallback(async () => {
    try {
      setPage(await api(`v1/image-batches${query({ limit: PAGE_SIZE, after: cursors.after, status })}`));
    } catch (err) {
      onNotice(errorNotice(err));
    }
  }, [cursors.after, status]);

  useEffect(() => {
    void load();
  }, [load, refresh]);
  // A new batch shows on the first page.
  useEffect(() => {
    if (refresh) cursors.reset();
  }, [refresh]);

  const live = Boolean(page?.data.some((b) => !isFinished(b.status)));
  usePolling(load, LIVE_MS, live);

  return html`<section aria-labelledby="list-title">
    <div class="section-head">
      <h2 id="list-title">Your batches</h2>
      <div class="inline-field">
        <label for="status-filter">Status</label>
        <select
          id="status-filter"
          value=${status}
          onChange=${(e) => {
            setStatus(e.currentTarget.value);
            cursors.reset();
          }}
        >
          <option value="">All</option>
          ${BATCH_STATUSES.map((s) => html`<option value=${s}>${s.replace('_', ' ')}</option>`)}
        </select>
      </div>
    </div>
    ${
      page === null
        ? html`<${Loading} what="Loading batches" />`
        : page.data.length === 0
          ? html`<p class="empty">${status ? `No ${status.replace('_', ' ')} batches.` : 'No batches yet: upload a JSONL above.'}</p>`
          : html`<table class="stack batches">
              <caption class="visually-hidden">
                Your batches, newest first${live ? '; unfinished ones update every few seconds' : ''}
              </caption>
              <thead>
                <tr>
                  <th scope="col">Batch</th>
                  <th scope="col">Created</th>
                  <th scope="col">Status</th>
                  <th scope="col">Progress</th>
                  <th scope="col">Requests</th>
                </tr>
              </thead>
              <tbody>
                ${page.data.map((b) => html`<${BatchRow} key=${b.id} batch=${b} />`)}
              </tbody>
            </table>`
    }
    <${Pager}
      label="Batch pages"
      canBack=${cursors.depth > 1}
      canForward=${Boolean(page?.has_more)}
      onBack=${cursors.back}
      onForward=${() => cursors.forward(page.last_id)}
    />
  </section>`;
}

function BatchRow({ batch: b }) {
  const c = b.request_counts;
  return html`<tr data-batch=${b.id}>
    <td data-label="Batch"><a class="mono" href=${`#/batches/${encodeURIComponent(b.id)}`}>${b.id}</a></td>
    <td data-label="Created"><${Time} at=${b.created_at} /></td>
    <td data-label="Status"><${StatusBadge} status=${b.status} /></td>
    <td data-label="Progress"><${ProgressBar} value=${batchProgress(b)} label=${`Progress of ${b.id}`} /></td>
    <td data-label="Requests">
      ${
        c.total === 0
          ? html`<span class="muted">none run</span>`
          : html`${fmtNumber(c.completed)} done${c.failed ? html`, <span class="bad">${fmtNumber(c.failed)} failed</span>` : ''}${` of ${fmtNumber(c.total)}`}`
      }
    </td>
  </tr>`;
}
