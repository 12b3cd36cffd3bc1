/** Small shared pieces: the template tag, formatting, status badges, progress bars, polling. */
import htm from 'htm';
import { h } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';

export const html = htm.bind(h);

export const BATCH_STATUSES = [
  'validating',
  'failed',
  'in_progress',
  'finalizing',
  'completed',
  'expired',
  'cancelling',
  'cancelled',
];
export const FINISHED = ['completed', 'failed', 'expired', 'cancelled'];
export const isFinished = (status) => FINISHED.includes(status);

const numbers = new Intl.NumberFormat('en-US');
export const fmtNumber = (n) => (n === null || n === undefined ? '—' : numbers.format(n));
export const fmtSigned = (n) => (n > 0 ? `+${numbers.format(n)}` : numbers.format(n));

const times = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
/** Unix seconds → local date and time, in a <time> element with the ISO form for machines. */
export function Time({ at }) {
  if (at === null || at === undefined) return html`<span class="muted">—</span>`;
  const d = new Date(at * 1000);
  return html`<time datetime=${d.toISOString()}>${times.format(d)}</time>`;
}

export function StatusBadge({ status }) {
  return html`<span class=${`badge badge-${status}`}>${status.replace('_', ' ')}</span>`;
}

/** Share of a batch's requests that are done (completed or failed), 0–100. */
export function batchProgress(b) {
  const { total, completed, failed } = b.request_counts ?? {};
  if (!total) return isFinished(b.status) ? 100 : 0;
  return Math.min(100, Math.round(((completed + failed) / total) * 100));
}

/** A progress bar screen readers announce: role, value range and a label of its own. */
export function ProgressBar({ value, label }) {
  return html`<div class="progress">
    <div
      class="bar"
      role="progressbar"
      aria-valuemin="0"
      aria-valuemax="100"
      aria-valuenow=${value}
      aria-label=${label}
    >
      <span class="fill" style=${{ width: `${value}%` }}></span>
    </div>
    <span class="progress-text" aria-hidden="true">${value}%</span>
  </div>`;
}

/** Where status messages appear; `aria-live` makes screen readers read them when they change. */
export function Notice({ notice }) {
  const error = notice?.kind === 'error';
  return html`<div class="notice-slot" role=${error ? 'alert' : 'status'} aria-live=${error ? 'assertive' : 'polite'}>
    ${notice ? html`<p class=${`notice notice-${notice.kind}`}>${notice.text}</p>` : null}
  </div>`;
}

export const errorNotice = (err) => ({ kind: 'error', text: err?.message ?? String(err) });

/**
 * Runs `tick` every `ms` while `active` and the tab is visible (a hidden tab asks nothing), and
 * once at once when the tab becomes visible again. The newest `tick` is used each time.
 */
export function usePolling(tick, ms, active) {
  const latest = useRef(tick);
  latest.current = tick;
  useEffect(() => {
    if (!active) return undefined;
    let timer = null;
    let stopped = false;
    const schedule = () => {
      clearTimeout(timer);
      if (!stopped && document.visibilityState === 'visible') timer = setTimeout(run, ms);
    };
    const run = async () => {
      try {
        await latest.current();
      } finally {
        schedule();
      }
    };
    const onVisibility = () => {
      if (document.visibilityState === 'visible') void run();
      else clearTimeout(timer);
    };
    schedule();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [active, ms]);
}

/** A button that asks once more before it acts (cancel, delete, revoke cannot be undone). */
export function ConfirmButton({
  label,
  ariaLabel,
  confirmLabel,
  question,
  onConfirm,
  danger = false,
  disabled = false,
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const yes = useRef(null);
  useEffect(() => {
    if (asking) yes.current?.focus();
  }, [asking]);
  if (!asking) {
    return html`<button
      type="button"
      class=${danger ? 'danger' : ''}
      aria-label=${ariaLabel}
      disabled=${disabled}
      onClick=${() => setAsking(true)}
    >
      ${label}
    </button>`;
  }
  const confirm = async () => {
    setBusy(true);
    try {
      await onConfirm();
    } finally {
      setBusy(false);
      setAsking(false);
    }
  };
  return html`<span class="confirm" role="group" aria-label=${question}>
    <span class="confirm-question">${question}</span>
    <button type="button" ref=${yes} class=${danger ? 'danger' : 'primary'} disabled=${busy} onClick=${confirm}>
      ${confirmLabel}
    </button>
    <button type="button" disabled=${busy} onClick=${() => setAsking(false)}>Keep it</button>
  </span>`;
}

/** Previous/next buttons over a stack of cursors (`after` ids of the pages seen so far). */
export function Pager({ label, canBack, canForward, onBack, onForward }) {
  if (!canBack && !canForward) return null;
  return html`<nav class="pager" aria-label=${label}>
    <button type="button" disabled=${!canBack} onClick=${onBack}>← Previous</button>
    <button type="button" disabled=${!canForward} onClick=${onForward}>Next →</button>
  </nav>`;
}

/** Keeps a paged list's cursors: `after` of the current page, and the way back. */
export function useCursorStack() {
  const [stack, setStack] = useState([null]);
  return {
    after: stack.at(-1),
    depth: stack.length,
    forward: (cursor) => setStack((s) => [...s, cursor]),
    back: () => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)),
    reset: () => setStack([null]),
  };
}

/** The tab's title follows the page. */
export function usePageTitle(title) {
  useEffect(() => {
    document.title = title ? `${title} · Image batch gateway` : 'Image batch gateway';
  }, [title]);
}

export function Loading({ what = 'Loading' }) {
  return html`<p class="muted" role="status">${what}…</p>`;
}

/** A term/description list from `[label, value]` pairs. */
export function Facts({ items, label }) {
  return html`<dl class="facts" aria-label=${label}>
    ${items.map(([term, value]) => html`<div class="fact"><dt>${term}</dt><dd>${value}</dd></div>`)}
  </dl>`;
}

/** A message for the next page (e.g. "deleted" after leaving the deleted batch's page). */
let flash = null;
export const setFlash = (notice) => {
  flash = notice;
};
export const takeFlash = () => {
  const f = flash;
  flash = null;
  return f;
};
