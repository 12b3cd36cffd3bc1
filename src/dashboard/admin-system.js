/** Operators: batches and image jobs by status, queue depth per pipeline step, Vertex jobs, dead jobs. */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api } from './api.js';
import { errorNotice, fmtNumber, html, Loading, Notice, Time, usePageTitle, usePolling } from './components.js';

const LIVE_MS = 3000;
const DEAD_JOBS_SHOWN = 20;

export function SystemPage() {
  usePageTitle('System');
  const [system, setSystem] = useState(null);
  const [dead, setDead] = useState(null);
  const [notice, setNotice] = useState(null);

  const load = useCallback(async () => {
    try {
      const [s, d] = await Promise.all([api('admin/system'), api(`admin/dead-jobs?limit=${DEAD_JOBS_SHOWN}`)]);
      setSystem(s);
      setDead(d.data);
      setNotice(null);
    } catch (err) {
      setNotice(errorNotice(err));
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  usePolling(load, LIVE_MS, true);

  return html`<main id="main">
    <h1 tabindex="-1">System</h1>
    <p class="lede">Updates every few seconds while this tab is visible.</p>
    <${Notice} notice=${notice} />
    ${
      system === null
        ? html`<${Loading} what="Loading the system's state" />`
        : html`<div class="stats">
              <div class="stat" id="stat-vertex">
                <span class="stat-value">${fmtNumber(system.vertex_jobs_in_flight)}</span>
                <span class="stat-label">Vertex jobs in flight</span>
              </div>
              <div class="stat" id="stat-dead">
                <span class=${`stat-value${system.dead_jobs ? ' bad' : ''}`}>${fmtNumber(system.dead_jobs)}</span>
                <span class="stat-label">Dead jobs</span>
              </div>
            </div>
            <div class="grid">
              <${Queues} queues=${system.queues} />
              <${Counts} id="batch-counts" title="Batches by status" counts=${system.batches} />
              <${Counts} id="job-counts" title="Image jobs by status" counts=${system.image_jobs} />
            </div>
            <${DeadJobs} jobs=${dead} />`
    }
  </main>`;
}

function Counts({ id, title, counts }) {
  return html`<section class="card" aria-labelledby=${`${id}-title`}>
    <h2 id=${`${id}-title`}>${title}</h2>
    <table id=${id} class="compact">
      <caption class="visually-hidden">${title}</caption>
      <thead>
        <tr><th scope="col">Status</th><th scope="col" class="num">Count</th></tr>
      </thead>
      <tbody>
        ${Object.entries(counts ?? {}).map(
          ([status, n]) => html`<tr key=${status} class=${n ? '' : 'muted'}>
            <th scope="row">${status.replace('_', ' ')}</th>
            <td class="num">${fmtNumber(n)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

function Queues({ queues }) {
  return html`<section class="card queues" aria-labelledby="queues-title">
    <h2 id="queues-title">Queue depth per step</h2>
    <table id="queues" class="compact">
      <caption class="visually-hidden">Jobs waiting and running, per pipeline step</caption>
      <thead>
        <tr>
          <th scope="col">Step</th>
          <th scope="col" class="num">Queued</th>
          <th scope="col" class="num">Active</th>
          <th scope="col" class="num">Deferred</th>
        </tr>
      </thead>
      <tbody>
        ${queues.map(
          (q) => html`<tr key=${q.name}>
            <th scope="row" class="mono nowrap">${q.name}</th>
            <td class="num">${fmtNumber(q.queued)}</td>
            <td class="num">${fmtNumber(q.active)}</td>
            <td class="num">${q.deferred === undefined ? '—' : fmtNumber(q.deferred)}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

const short = (value) => {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text && text.length > 200 ? `${text.slice(0, 200)}…` : (text ?? '');
};

function DeadJobs({ jobs }) {
  return html`<section aria-labelledby="dead-title">
    <h2 id="dead-title">Dead jobs <span class="unit">(newest ${DEAD_JOBS_SHOWN})</span></h2>
    ${
      !jobs?.length
        ? html`<p class="empty">No dead jobs: every step finished or is still retrying.</p>`
        : html`<table class="stack">
            <caption class="visually-hidden">Jobs that used up their retries, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Data</th>
                <th scope="col">Error</th>
                <th scope="col" class="num">Retries</th>
                <th scope="col">Failed</th>
              </tr>
            </thead>
            <tbody>
              ${jobs.map(
                (j) => html`<tr key=${j.id}>
                  <td data-label="Job" class="mono">${j.job}</td>
                  <td data-label="Data" class="mono small">${short(j.data)}</td>
                  <td data-label="Error" class="small">${short(j.error)}</td>
                  <td data-label="Retries" class="num">${j.retries}</td>
                  <td data-label="Failed"><${Time} at=${j.failed_at} /></td>
                </tr>`,
              )}
            </tbody>
          </table>`
    }
  </section>`;
}
