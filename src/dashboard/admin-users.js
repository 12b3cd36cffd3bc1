/** Operators: users (search, paging, new user), and one user's quota, top-up, keys and ledger. */
import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, query } from './api.js';
import {
  ConfirmButton,
  errorNotice,
  Facts,
  fmtNumber,
  fmtSigned,
  html,
  Loading,
  Notice,
  Pager,
  Time,
  useCursorStack,
  usePageTitle,
} from './components.js';

const PAGE_SIZE = 50;
const LEDGER_PAGE = 100;

export function UsersPage() {
  usePageTitle('Users');
  const [notice, setNotice] = useState(null);
  const [search, setSearch] = useState('');
  const [q, setQ] = useState('');
  const [page, setPage] = useState(null);
  const cursors = useCursorStack();

  const load = useCallback(async () => {
    try {
      setPage(await api(`admin/users${query({ limit: PAGE_SIZE, after: cursors.after, q })}`));
    } catch (err) {
      setNotice(errorNotice(err));
    }
  }, [cursors.after, q]);
  useEffect(() => {
    void load();
  }, [load]);

  const submit = (e) => {
    e.preventDefault();
    setQ(search.trim());
    cursors.reset();
  };

  return html`<main id="main">
    <h1 tabindex="-1">Users</h1>
    <${Notice} notice=${notice} />
    <div class="grid two">
      <form class="card" role="search" onSubmit=${submit} aria-labelledby="search-title">
        <h2 id="search-title">Find users</h2>
        <label for="user-search">Search users</label>
        <div class="row">
          <input
            id="user-search"
            type="search"
            placeholder="name or id"
            value=${search}
            onInput=${(e) => setSearch(e.currentTarget.value)}
          />
          <button type="submit">Search</button>
        </div>
      </form>
      <${NewUser} onNotice=${setNotice} onCreated=${load} />
    </div>
    <section aria-labelledby="users-title">
      <h2 id="users-title">${q ? `Users matching “${q}”` : 'All users'}</h2>
      ${
        page === null
          ? html`<${Loading} what="Loading users" />`
          : page.data.length === 0
            ? html`<p class="empty">No users${q ? ` match “${q}”` : ' yet'}.</p>`
            : html`<table class="stack">
                <caption class="visually-hidden">Users, newest first</caption>
                <thead>
                  <tr>
                    <th scope="col">ID</th>
                    <th scope="col">Name</th>
                    <th scope="col" class="num">Quota</th>
                    <th scope="col" class="num">Used</th>
                    <th scope="col">Privacy accepted</th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  ${page.data.map(
                    (u) => html`<tr key=${u.id}>
                      <td data-label="ID">${u.id}</td>
                      <td data-label="Name"><a href=${`#/admin/users/${u.id}`}>${u.name}</a></td>
                      <td data-label="Quota" class="num">${fmtNumber(u.quota)}</td>
                      <td data-label="Used" class="num">${fmtNumber(u.used_quota)}</td>
                      <td data-label="Privacy accepted"><${Time} at=${u.privacy_accepted_at} /></td>
                      <td data-label="Created"><${Time} at=${u.created_at} /></td>
                    </tr>`,
                  )}
                </tbody>
              </table>`
      }
      <${Pager}
        label="User pages"
        canBack=${cursors.depth > 1}
        canForward=${Boolean(page?.has_more)}
        onBack=${cursors.back}
        onForward=${() => cursors.forward(page.data.at(-1).id)}
      />
    </section>
  </main>`;
}

function NewUser({ onNotice, onCreated }) {
  const [name, setName] = useState('');
  const [quota, setQuota] = useState('0');
  const [created, setCreated] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const amount = Number(quota || 0);
    if (!name.trim()) return onNotice({ kind: 'error', text: 'Give the new user a name.' });
    if (!Number.isSafeInteger(amount) || amount < 0) {
      return onNotice({ kind: 'error', text: 'The initial quota is a whole number ≥ 0.' });
    }
    try {
      const user = await api('admin/users', { method: 'POST', body: { name: name.trim(), quota: amount } });
      setCreated(user);
      setName('');
      onNotice({ kind: 'success', text: `Created user ${user.id} (${user.name}).` });
      await onCreated();
    } catch (err) {
      onNotice(errorNotice(err));
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="new-user-title">
    <h2 id="new-user-title">New user</h2>
    <div class="row">
      <div class="field">
        <label for="new-user-name">Name</label>
        <input id="new-user-name" value=${name} maxlength="200" onInput=${(e) => setName(e.currentTarget.value)} />
      </div>
      <div class="field">
        <label for="new-user-quota">Initial quota</label>
        <input
          id="new-user-quota"
          type="number"
          min="0"
          step="1"
          inputmode="numeric"
          value=${quota}
          onInput=${(e) => setQuota(e.currentTarget.value)}
        />
      </div>
    </div>
    <button type="submit" class="primary">Create user</button>
    ${created ? html`<${NewKey} apiKey=${created.api_key} who=${`${created.name} (user ${created.id})`} />` : null}
  </form>`;
}

/** A new API key, shown this once (the service keeps only its digest). */
function NewKey({ apiKey, who }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(apiKey);
      setCopied(true);
    } catch {
      document.getElementById('new-key')?.select();
    }
  };
  return html`<div class="new-key">
    <label for="new-key">New API key of ${who}: copy it now, it is not shown again</label>
    <div class="row">
      <input id="new-key" class="mono" readonly value=${apiKey} onFocus=${(e) => e.currentTarget.select()} />
      <button type="button" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button>
    </div>
  </div>`;
}

export function UserPage({ id }) {
  usePageTitle(`User ${id}`);
  const [user, setUser] = useState(null);
  const [missing, setMissing] = useState(false);
  const [notice, setNotice] = useState(null);
  const [newKey, setNewKey] = useState(null);
  const path = `admin/users/${encodeURIComponent(id)}`;

  const load = useCallback(async () => {
    try {
      setUser(await api(path));
    } catch (err) {
      if (err.status === 404 || err.code === 'invalid_id') setMissing(true);
      else setNotice(errorNotice(err));
    }
  }, [path]);
  useEffect(() => {
    setUser(null);
    setMissing(false);
    setNewKey(null);
    void load();
  }, [load]);

  const topUp = async (amount) => {
    try {
      const after = await api(`${path}/topup`, { method: 'POST', body: { quota: amount } });
      setNotice({ kind: 'success', text: `Added ${fmtNumber(amount)}: quota is now ${fmtNumber(after.quota)}.` });
      await load();
      return true;
    } catch (err) {
      setNotice(errorNotice(err));
      return false;
    }
  };
  const issueKey = async () => {
    try {
      const { api_key } = await api(`${path}/keys`, { method: 'POST' });
      setNewKey(api_key);
      setNotice({ kind: 'success', text: 'Issued a new API key.' });
      await load();
    } catch (err) {
      setNotice(errorNotice(err));
    }
  };
  const revoke = async (keyId) => {
    try {
      await api(`${path}/keys/${keyId}`, { method: 'DELETE' });
      setNotice({ kind: 'success', text: `Revoked key ${keyId}.` });
      await load();
    } catch (err) {
      setNotice(errorNotice(err));
    }
  };

  return html`<main id="main">
    <p class="crumbs"><a href="#/admin/users">← Users</a></p>
    <h1 tabindex="-1">${user ? `${user.name}` : `User ${id}`} <span class="muted">#${id}</span></h1>
    <${Notice} notice=${notice} />
    ${
      missing
        ? html`<p class="empty">There is no user ${id}.</p>`
        : user === null
          ? html`<${Loading} what="Loading the user" />`
          : html`<div class="grid two">
                <section class="card" aria-labelledby="quota-title">
                  <h2 id="quota-title">Quota</h2>
                  <${Facts}
                    label="Quota"
                    items=${[
                      ['Quota', html`<span id="user-quota">${fmtNumber(user.quota)}</span>`],
                      ['Used', fmtNumber(user.used_quota)],
                      ['Privacy accepted', html`<${Time} at=${user.privacy_accepted_at} />`],
                      ['Created', html`<${Time} at=${user.created_at} />`],
                    ]}
                  />
                  <${TopUp} onTopUp=${topUp} />
                </section>
                <section class="card" aria-labelledby="keys-title">
                  <h2 id="keys-title">API keys</h2>
                  <${Keys} keys=${user.api_keys} onRevoke=${revoke} />
                  <button type="button" onClick=${issueKey}>Issue a new key</button>
                  ${newKey ? html`<${NewKey} apiKey=${newKey} who=${user.name} />` : null}
                </section>
              </div>
              <${Ledger} user=${user} />`
    }
  </main>`;
}

function TopUp({ onTopUp }) {
  const [amount, setAmount] = useState('');
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    const n = Number(amount);
    if (!/^\d+$/.test(amount.trim()) || !Number.isSafeInteger(n) || n <= 0) {
      return setError('Enter a whole number of quota units greater than 0.');
    }
    setError(null);
    if (await onTopUp(n)) setAmount('');
  };
  return html`<form class="topup" onSubmit=${submit} novalidate>
    <label for="topup-amount">Top-up amount</label>
    <div class="row">
      <input
        id="topup-amount"
        type="number"
        min="1"
        step="1"
        inputmode="numeric"
        value=${amount}
        aria-invalid=${error ? 'true' : undefined}
        aria-describedby=${error ? 'topup-error' : undefined}
        onInput=${(e) => setAmount(e.currentTarget.value)}
      />
      <button type="submit" class="primary">Top up</button>
    </div>
    ${error ? html`<p id="topup-error" class="field-error" role="alert">${error}</p>` : null}
  </form>`;
}

function Keys({ keys, onRevoke }) {
  if (!keys.length) return html`<p class="empty">No keys.</p>`;
  return html`<table class="stack keys">
    <caption class="visually-hidden">API keys of this user</caption>
    <thead>
      <tr>
        <th scope="col">Key</th>
        <th scope="col">Created</th>
        <th scope="col">State</th>
        <th scope="col"><span class="visually-hidden">Action</span></th>
      </tr>
    </thead>
    <tbody>
      ${keys.map(
        (k) => html`<tr key=${k.id}>
          <td data-label="Key" class="mono nowrap">${k.hint}</td>
          <td data-label="Created"><${Time} at=${k.created_at} /></td>
          <td data-label="State">${k.revoked_at ? html`revoked <${Time} at=${k.revoked_at} />` : 'active'}</td>
          <td data-label="Action">
            ${
              k.revoked_at
                ? null
                : html`<${ConfirmButton}
                    label="Revoke"
                    ariaLabel=${`Revoke ${k.hint}`}
                    confirmLabel="Yes, revoke"
                    question=${`Revoke key ${k.hint}? Clients using it stop working at once.`}
                    danger=${true}
                    onConfirm=${() => onRevoke(k.id)}
                  />`
            }
          </td>
        </tr>`,
      )}
    </tbody>
  </table>`;
}

/**
 * The user's billing log, oldest first, with the ledger's invariant: users start at quota 0 and
 * every change writes a log row, so the quota must equal the sum of the rows' deltas.
 */
function Ledger({ user }) {
  const [rows, setRows] = useState([]);
  const [more, setMore] = useState(false);
  const [notice, setNotice] = useState(null);

  const fetchRows = useCallback(
    async (after) => {
      try {
        const page = await api(`admin/logs${query({ user_id: user.id, limit: LEDGER_PAGE, after })}`);
        setRows((seen) => (after ? [...seen, ...page.data] : page.data));
        setMore(page.has_more);
      } catch (err) {
        setNotice(errorNotice(err));
      }
    },
    [user.id],
  );
  // Each load of the user (a top-up, a new key) is a new object: its rows are read again with it.
  useEffect(() => {
    void fetchRows(null);
  }, [fetchRows, user]);

  const l = user.ledger;
  return html`<section aria-labelledby="ledger-title">
    <h2 id="ledger-title">Ledger</h2>
    ${
      l
        ? html`<p id="ledger-invariant" class=${`invariant ${l.balanced ? 'ok' : 'bad'}`}>
            ${`Quota change ${fmtNumber(l.quota)} ${l.balanced ? '=' : '≠'} Σ log deltas ${fmtNumber(l.log_sum)} (${fmtNumber(l.log_count)} rows) `}
            <strong>${l.balanced ? '✓ balanced' : '✗ out of balance'}</strong>
          </p>`
        : null
    }
    <${Notice} notice=${notice} />
    ${
      rows.length === 0
        ? html`<p class="empty">No ledger rows.</p>`
        : html`<table class="stack ledger">
            <caption class="visually-hidden">Billing log of this user, oldest first</caption>
            <thead>
              <tr>
                <th scope="col">ID</th>
                <th scope="col">Time</th>
                <th scope="col">Type</th>
                <th scope="col" class="num">Δ quota</th>
                <th scope="col">For</th>
                <th scope="col">Note</th>
              </tr>
            </thead>
            <tbody>
              ${rows.map(
                (r) => html`<tr key=${r.id}>
                  <td data-label="ID">${r.id}</td>
                  <td data-label="Time"><${Time} at=${r.created_at} /></td>
                  <td data-label="Type">${r.type}</td>
                  <td data-label="Δ quota" class=${`num ${r.quota_delta < 0 ? 'bad' : 'good'}`}>${fmtSigned(r.quota_delta)}</td>
                  <td data-label="For" class="mono">${r.batch_id ?? r.image_job_id ?? '—'}</td>
                  <td data-label="Note">${r.content ?? ''}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
    }
    ${
      more
        ? html`<button type="button" class="more" onClick=${() => fetchRows(rows.at(-1).id)}>Load more rows</button>`
        : null
    }
  </section>`;
}
