import { useEffect, useRef, useState } from 'preact/hooks';
import {
  api,
  ApiError,
  type AccountInfo,
  type AppPassword,
  type LoginEntry,
  type TwoFactorEnrolment,
  type Forwarding,
  type Vacation,
} from './api.ts';
import { Icon } from './icons.tsx';

const message = (err: unknown) => (err instanceof ApiError ? err.message : 'Something went wrong; try again');

/** The account page: password, two-factor login, app passwords, recent logins, signing out everywhere. */
export function AccountPage(props: { account: string; onBack: () => void; onSignedOut: () => void }) {
  const [info, setInfo] = useState<AccountInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const reload = () => api.account().then(setInfo, (e: unknown) => setError(message(e)));
  useEffect(() => void reload(), []);

  return (
    <div class="account-page">
      <header class="topbar">
        <span class="brand">
          <Icon name="mail" class="brand-mark" />
          Mailyard
        </span>
        <h1>Your account</h1>
        <span class="account" title={props.account}>
          {props.account}
        </span>
        <button onClick={props.onBack}>Back to mail</button>
      </header>
      <main class="account-main">
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {info && <TwoFactorSection info={info} onChange={() => void reload()} />}
        <AppPasswords />
        <VacationSection />
        <ForwardingSection />
        <PasswordSection />
        <RecentLogins onSignedOut={props.onSignedOut} />
      </main>
    </div>
  );
}

function TwoFactorSection(props: { info: AccountInfo; onChange: () => void }) {
  const tf = props.info.twoFactor;
  const [enrolment, setEnrolment] = useState<TwoFactorEnrolment | null>(null);
  const [codes, setCodes] = useState<string[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const code = useRef<HTMLInputElement>(null);
  const password = useRef<HTMLInputElement>(null);
  if (!tf.available) return null;

  const begin = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      setEnrolment(await api.twoFactorBegin(password.current!.value));
    } catch (err) {
      setError(message(err));
    }
  };
  const confirm = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      const res = await api.twoFactorConfirm(code.current!.value.trim());
      setCodes(res.recoveryCodes);
      setEnrolment(null);
      props.onChange();
    } catch (err) {
      setError(message(err));
    }
  };
  const disable = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      await api.twoFactorDisable(password.current!.value);
      setCodes(null);
      props.onChange();
    } catch (err) {
      setError(message(err));
    }
  };

  return (
    <section aria-labelledby="tf-title" class="card">
      <h2 id="tf-title">Two-factor login</h2>
      <p class="warning">
        With two-factor login on, your password no longer works in mail apps (IMAP, POP3, sending from a phone
        or computer): they need an app password, below. A stolen password alone then opens nothing.
      </p>
      {tf.enabled ? (
        <>
          <p role="status">
            Two-factor login is <strong>on</strong>. Recovery codes left: {tf.recoveryCodesLeft}.
          </p>
          {codes && (
            <div class="recovery" aria-label="Recovery codes">
              <p>
                Keep these recovery codes somewhere safe. Each works once, instead of a code. They are shown
                only now.
              </p>
              <ul>
                {codes.map((c) => (
                  <li key={c}>
                    <code>{c}</code>
                  </li>
                ))}
              </ul>
            </div>
          )}
          <form onSubmit={(e) => void disable(e)} class="inline-form">
            <label for="tf-password">Your password, to turn it off</label>
            <input id="tf-password" ref={password} type="password" autoComplete="current-password" required />
            <button type="submit">Turn off two-factor login</button>
          </form>
        </>
      ) : enrolment ? (
        <form onSubmit={(e) => void confirm(e)}>
          <p>Scan this code with your authenticator app, then type the code it shows.</p>
          <img
            class="qr"
            src={enrolment.qr}
            alt="QR code for your authenticator app"
            width={200}
            height={200}
          />
          <p class="fineprint">
            Or enter this key by hand: <code class="secret">{enrolment.secret}</code>
          </p>
          <label for="tf-code">Code from the app</label>
          <input id="tf-code" ref={code} inputMode="numeric" autoComplete="one-time-code" required />
          <button type="submit" class="primary">
            Turn on
          </button>
        </form>
      ) : (
        <>
          <p role="status">
            Two-factor login is <strong>off</strong>.
          </p>
          <form onSubmit={(e) => void begin(e)} class="inline-form">
            <label for="tf-begin-password">Your password, to set it up</label>
            <input
              id="tf-begin-password"
              ref={password}
              type="password"
              autoComplete="current-password"
              required
            />
            <button type="submit" class="primary">
              Set up two-factor login
            </button>
          </form>
        </>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

function AppPasswords() {
  const [list, setList] = useState<AppPassword[]>([]);
  const [created, setCreated] = useState<{ name: string; secret: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const name = useRef<HTMLInputElement>(null);
  const password = useRef<HTMLInputElement>(null);
  const reload = () =>
    api.appPasswords().then(
      (r) => setList(r.appPasswords),
      (e: unknown) => setError(message(e)),
    );
  useEffect(() => void reload(), []);

  const create = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      setCreated(await api.createAppPassword(name.current!.value.trim(), password.current!.value));
      name.current!.value = '';
      password.current!.value = '';
      await reload();
    } catch (err) {
      setError(message(err));
    }
  };
  const revoke = async (n: string) => {
    setError(null);
    try {
      await api.revokeAppPassword(n);
      if (created?.name === n) setCreated(null);
      await reload();
    } catch (err) {
      setError(message(err));
    }
  };

  return (
    <section aria-labelledby="ap-title" class="card">
      <h2 id="ap-title">App passwords</h2>
      <p>One for each mail app (phone, laptop): revoke one and only that device is logged out.</p>
      {created && (
        <p class="created" role="status">
          App password for “{created.name}” (shown only now):{' '}
          <code class="secret" aria-label="New app password">
            {created.secret.replace(/(.{4})(?=.)/g, '$1 ')}
          </code>
        </p>
      )}
      <table class="app-passwords">
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Created</th>
            <th scope="col">Last used</th>
            <th scope="col">
              <span class="sr-only">Revoke</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {list.map((p) => (
            <tr key={p.name}>
              <td>{p.name}</td>
              <td>{new Date(p.created).toLocaleString()}</td>
              <td>
                {p.lastUsed ? `${new Date(p.lastUsed).toLocaleString()} from ${p.lastIp ?? '?'}` : 'never'}
              </td>
              <td>
                <button onClick={() => void revoke(p.name)} aria-label={`Revoke ${p.name}`}>
                  Revoke
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form onSubmit={(e) => void create(e)} class="inline-form">
        <label for="ap-name">Name of the device</label>
        <input id="ap-name" ref={name} required maxLength={64} placeholder="phone" />
        <label for="ap-password">Your password</label>
        <input id="ap-password" ref={password} type="password" autoComplete="current-password" required />
        <button type="submit" class="primary">
          Create app password
        </button>
      </form>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

function PasswordSection() {
  const [done, setDone] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const current = useRef<HTMLInputElement>(null);
  const next = useRef<HTMLInputElement>(null);
  const again = useRef<HTMLInputElement>(null);
  const change = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setDone(false);
    if (next.current!.value !== again.current!.value) return setError('The two new passwords differ');
    try {
      const res = await api.changePassword(current.current!.value, next.current!.value);
      // signed out meanwhile: the login page says the password changed
      if (!('csrf' in res)) return;
      for (const r of [current, next, again]) r.current!.value = '';
      setDone(true);
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <section aria-labelledby="pw-title" class="card">
      <h2 id="pw-title">Password</h2>
      <p>
        At least 10 characters, not your address. Changing it ends your other sessions: mail apps that use the
        password must log in again (those with an app password stay).
      </p>
      <form onSubmit={(e) => void change(e)} class="stacked-form">
        <label for="pw-current">Current password</label>
        <input id="pw-current" ref={current} type="password" autoComplete="current-password" required />
        <label for="pw-new">New password</label>
        <input id="pw-new" ref={next} type="password" autoComplete="new-password" minLength={10} required />
        <label for="pw-again">New password again</label>
        <input
          id="pw-again"
          ref={again}
          type="password"
          autoComplete="new-password"
          minLength={10}
          required
        />
        <button type="submit" class="primary">
          Change password
        </button>
      </form>
      {done && <p role="status">Password changed; your other sessions were ended.</p>}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

const PROTOCOLS: Record<LoginEntry['protocol'], string> = {
  imap: 'IMAP',
  pop3: 'POP3',
  submission: 'Sending (SMTP)',
  webmail: 'Webmail',
};

function RecentLogins(props: { onSignedOut: () => void }) {
  const [list, setList] = useState<LoginEntry[]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(
    () =>
      void api.logins().then(
        (r) => setList(r.logins),
        (e: unknown) => setError(message(e)),
      ),
    [],
  );
  const signOut = async () => {
    setError(null);
    if (!confirm('Sign out everywhere? Every mail app and browser, this one too, must log in again.')) return;
    try {
      await api.signOutEverywhere();
      props.onSignedOut();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <section aria-labelledby="rl-title" class="card">
      <h2 id="rl-title">Recent logins</h2>
      <table class="logins">
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">How</th>
            <th scope="col">From</th>
            <th scope="col">Client</th>
          </tr>
        </thead>
        <tbody>
          {list.map((l, i) => (
            <tr key={i}>
              <td>{new Date(l.at).toLocaleString()}</td>
              <td>
                {PROTOCOLS[l.protocol]}
                {l.appPassword ? `, app password “${l.appPassword}”` : ''}
              </td>
              <td>{l.ip}</td>
              <td>{l.client ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p>Something you do not recognise? Sign out everywhere, then change your password.</p>
      <button class="danger" onClick={() => void signOut()}>
        Sign out everywhere
      </button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

function VacationSection() {
  const [v, setV] = useState<Vacation | null>(null);
  const [saved, setSaved] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => void api.vacation().then(setV, (e: unknown) => setError(message(e))), []);
  if (!v) return null;
  const set = (patch: Partial<Vacation>) => {
    setSaved(false);
    setV({ ...v, ...patch });
  };
  const save = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      setV(await api.setVacation(v));
      setSaved(true);
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <section aria-labelledby="oo-title" class="card">
      <h2 id="oo-title">Out of office</h2>
      <p>
        An automatic reply, sent once per sender every few days; never to mailing lists, newsletters,
        automatic mail or spam, nor to mail that does not name you in To or Cc.
      </p>
      <form onSubmit={(e) => void save(e)} class="stacked-form">
        <label class="check">
          <input
            type="checkbox"
            checked={v.enabled}
            onChange={(e) => set({ enabled: (e.target as HTMLInputElement).checked })}
          />{' '}
          Reply automatically
        </label>
        <label for="oo-subject">Subject (empty: “Auto:” and the original subject)</label>
        <input
          id="oo-subject"
          value={v.subject}
          maxLength={200}
          onInput={(e) => set({ subject: (e.target as HTMLInputElement).value })}
        />
        <label for="oo-body">Message</label>
        <textarea
          id="oo-body"
          value={v.body}
          maxLength={8000}
          onInput={(e) => set({ body: (e.target as HTMLTextAreaElement).value })}
        />
        <label for="oo-start">First day (optional)</label>
        <input
          id="oo-start"
          type="date"
          value={v.start ?? ''}
          onInput={(e) => set({ start: (e.target as HTMLInputElement).value || null })}
        />
        <label for="oo-end">Last day (optional)</label>
        <input
          id="oo-end"
          type="date"
          value={v.end ?? ''}
          onInput={(e) => set({ end: (e.target as HTMLInputElement).value || null })}
        />
        <label for="oo-days">Days before the same sender is answered again</label>
        <input
          id="oo-days"
          type="number"
          min={1}
          max={30}
          value={v.days}
          onInput={(e) => set({ days: Number((e.target as HTMLInputElement).value) })}
        />
        <button type="submit" class="primary">
          Save out-of-office reply
        </button>
      </form>
      {saved && <p role="status">Saved: the reply is {v.enabled ? 'on' : 'off'}.</p>}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

function ForwardingSection() {
  const [f, setF] = useState<Forwarding | null>(null);
  const [text, setText] = useState('');
  const [saved, setSaved] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(
    () =>
      void api.forwarding().then(
        (r) => {
          setF(r);
          setText(r.targets.join('\n'));
        },
        (e: unknown) => setError(message(e)),
      ),
    [],
  );
  if (!f) return null;
  const save = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      const targets = text
        .split(/[\s,;]+/)
        .map((t) => t.trim())
        .filter(Boolean);
      const r = await api.setForwarding({ targets, keepCopy: f.keepCopy });
      setF(r);
      setText(r.targets.join('\n'));
      setSaved(true);
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <section aria-labelledby="fw-title" class="card">
      <h2 id="fw-title">Forwarding</h2>
      <p>Send every message on to other addresses (at most 10). Spam is not forwarded.</p>
      <form onSubmit={(e) => void save(e)} class="stacked-form">
        <label for="fw-targets">Forward to (one address per line; empty: off)</label>
        <textarea
          id="fw-targets"
          value={text}
          onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        />
        <label class="check">
          <input
            type="checkbox"
            checked={f.keepCopy}
            onChange={(e) => setF({ ...f, keepCopy: (e.target as HTMLInputElement).checked })}
          />{' '}
          Keep a copy here
        </label>
        <button type="submit" class="primary">
          Save forwarding
        </button>
      </form>
      {saved && (
        <p role="status">
          {f.targets.length ? `Forwarding to ${f.targets.join(', ')}.` : 'Forwarding is off.'}
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}
