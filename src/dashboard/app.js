/**
 * The dashboard's shell: sign-in, the header and navigation, and a hash router (`#/batches/…`),
 * so nothing of the app's state reaches a server log or a Referer header.
 */
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ModelsPage } from './admin-models.js';
import { SystemPage } from './admin-system.js';
import { UserPage, UsersPage } from './admin-users.js';
import { api, loadSession, onUnauthorized, saveSession } from './api.js';
import { html, Notice, usePageTitle } from './components.js';
import { BatchPage } from './user-batch.js';
import { BatchesPage } from './user-batches.js';

/** `#/a/b` → ['a', 'b']. */
const parseHash = () =>
  location.hash
    .replace(/^#\/?/, '')
    .split('/')
    .filter(Boolean)
    .map((p) => decodeURIComponent(p));

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const onChange = () => setRoute(parseHash());
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

function SignIn({ onSignIn, notice }) {
  usePageTitle('Sign in');
  return html`<main id="main" class="signin">
    <h1>Image batch gateway</h1>
    <p class="lede">Generate images in batches on Vertex AI: upload a JSONL, watch it run, collect the pictures.</p>
    <${Notice} notice=${notice} />
    <div class="signin-cards">
      <${SignInForm}
        role="user"
        title="Batch users"
        label="API key"
        hint="The sk-… key you were given. It stays in this tab only, until you sign out or close it."
        button="Sign in"
        check=${(secret) => api('api/image-batch-privacy', { secret })}
        onSignIn=${onSignIn}
      />
      <${SignInForm}
        role="admin"
        title="Operators"
        label="Admin token"
        hint="The service's ADMIN_TOKEN: users, quota, keys, models and prices, the system."
        button="Sign in as operator"
        check=${(secret) => api('admin/models', { secret })}
        onSignIn=${onSignIn}
      />
    </div>
  </main>`;
}

function SignInForm({ role, title, label, hint, button, check, onSignIn }) {
  const [secret, setSecret] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const id = `signin-${role}`;
  const submit = async (e) => {
    e.preventDefault();
    const value = secret.trim();
    if (!value) return setError(`Enter the ${label.toLowerCase()}.`);
    setBusy(true);
    setError(null);
    try {
      await check(value);
      onSignIn({ role, secret: value });
    } catch (err) {
      setError(err.message);
      setBusy(false);
    }
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby=${`${id}-title`} novalidate>
    <h2 id=${`${id}-title`}>${title}</h2>
    <label for=${id}>${label}</label>
    <input
      id=${id}
      type="password"
      autocomplete="off"
      spellcheck=${false}
      value=${secret}
      onInput=${(e) => setSecret(e.currentTarget.value)}
      aria-describedby=${`${id}-hint${error ? ` ${id}-error` : ''}`}
      aria-invalid=${error ? 'true' : undefined}
    />
    <p id=${`${id}-hint`} class="hint">${hint}</p>
    ${error ? html`<p id=${`${id}-error`} class="field-error" role="alert">${error}</p>` : null}
    <button type="submit" class="primary" disabled=${busy}>${busy ? 'Checking…' : button}</button>
  </form>`;
}

const USER_NAV = [['#/batches', 'Batches', 'batches']];
const ADMIN_NAV = [
  ['#/admin/users', 'Users', 'users'],
  ['#/admin/models', 'Models', 'models'],
  ['#/admin/system', 'System', 'system'],
];

function Shell({ session, route, onSignOut, children }) {
  const nav = session.role === 'admin' ? ADMIN_NAV : USER_NAV;
  const section = session.role === 'admin' ? route[1] : route[0];
  return html`<a class="skip" href="#main" onClick=${skipToMain}>Skip to content</a>
    <header class="top">
      <a class="brand" href=${nav[0][0]}>Image batch gateway</a>
      <nav aria-label="Main">
        <ul>
          ${nav.map(
            ([href, text, key]) =>
              html`<li><a href=${href} aria-current=${section === key || (!section && key === nav[0][2]) ? 'page' : undefined}>${text}</a></li>`,
          )}
        </ul>
      </nav>
      <span class="who">${session.role === 'admin' ? 'Operator' : 'API key user'}</span>
      <button type="button" class="link" onClick=${onSignOut}>Sign out</button>
    </header>
    ${children}`;
}

/** The skip link moves focus without touching the hash (the hash is the router's). */
function skipToMain(e) {
  e.preventDefault();
  document.querySelector('main h1')?.focus();
}

function page(session, route) {
  if (session.role === 'admin') {
    const [, section, id] = route;
    if (section === 'users' && id) return html`<${UserPage} id=${id} />`;
    if (section === 'models') return html`<${ModelsPage} />`;
    if (section === 'system') return html`<${SystemPage} />`;
    return html`<${UsersPage} />`;
  }
  const [section, id] = route;
  if (section === 'batches' && id) return html`<${BatchPage} id=${id} />`;
  return html`<${BatchesPage} />`;
}

function App() {
  const [session, setSession] = useState(loadSession);
  const [notice, setNotice] = useState(null);
  const route = useRoute();
  const first = useRef(true);

  useEffect(() => {
    onUnauthorized((err) => {
      saveSession(null);
      setSession(null);
      setNotice({ kind: 'error', text: `Signed out: ${err.message}` });
    });
  }, []);

  // A new page moves focus to its heading (not on the first load), as a screen reader user expects.
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    requestAnimationFrame(() => document.querySelector('main h1')?.focus());
  }, [route.join('/'), session?.role]);

  const signIn = (s) => {
    saveSession(s);
    setNotice(null);
    setSession(s);
    location.hash = s.role === 'admin' ? '#/admin/users' : '#/batches';
  };
  const signOut = () => {
    saveSession(null);
    setSession(null);
    setNotice({ kind: 'info', text: 'Signed out.' });
    history.replaceState(null, '', location.pathname);
  };

  if (!session) return html`<${SignIn} onSignIn=${signIn} notice=${notice} />`;
  return html`<${Shell} session=${session} route=${route} onSignOut=${signOut}>${page(session, route)}<//>`;
}

render(html`<${App} />`, document.getElementById('app'));
