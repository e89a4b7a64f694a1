import { useRef, useState } from 'preact/hooks';
import { api, ApiError, setCsrf, type SessionInfo } from './api.ts';
import { Icon } from './icons.tsx';

/** The login form; then, for an account that has one, the second step. */
export function Login(props: {
  notice?: string | undefined;
  secondFactorFor?: string | undefined;
  onDone: (s: SessionInfo) => void;
}) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [second, setSecond] = useState<string | null>(props.secondFactorFor ?? null);
  const user = useRef<HTMLInputElement>(null);
  const pass = useRef<HTMLInputElement>(null);
  const code = useRef<HTMLInputElement>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      let s: SessionInfo;
      if (second) {
        s = await api.secondFactor(code.current!.value.trim());
      } else {
        const fresh = await api.session();
        setCsrf(fresh.loginToken ?? '');
        s = await api.login(user.current!.value.trim(), pass.current!.value);
      }
      if (s.csrf) setCsrf(s.csrf);
      if (s.next === 'second-factor') {
        setSecond(s.account ?? '');
        setBusy(false);
        window.setTimeout(() => code.current?.focus(), 0);
        return;
      }
      props.onDone(s);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : 'Login failed');
      setBusy(false);
      // the login under way was ended: back to the password
      if (err instanceof ApiError && err.code === 'too_many_codes') setSecond(null);
      if (pass.current) {
        pass.current.value = '';
        pass.current.focus();
      }
    }
  };

  return (
    <main class="login" aria-labelledby="login-title">
      <form
        class="login-card"
        onSubmit={(e) => void submit(e)}
        aria-describedby={error ? 'login-error' : undefined}
      >
        <div class="brand" aria-hidden="true">
          <Icon name="mail" class="brand-mark" /> Mailyard
        </div>
        <h1 id="login-title">{second ? 'One more step' : 'Log in to your mail'}</h1>
        {props.notice && !error && <p class="notice">{props.notice}</p>}
        {second ? (
          <>
            <p>Enter the code from your authenticator app for {second}.</p>
            <label for="code">Code</label>
            <input id="code" ref={code} inputMode="numeric" autoComplete="one-time-code" required />
          </>
        ) : (
          <>
            <label for="username">Email address</label>
            <input
              id="username"
              ref={user}
              // text, not email: Chromium refuses a UTF-8 local part or a Unicode domain,
              // both of which an account can have (RFC 6531)
              type="text"
              inputMode="email"
              autoComplete="username"
              required
              autoFocus
              placeholder="you@example.org"
            />
            <label for="password">Password</label>
            <input id="password" ref={pass} type="password" autoComplete="current-password" required />
          </>
        )}
        {error && (
          <p id="login-error" class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {busy ? 'Logging in…' : second ? 'Verify' : 'Log in'}
        </button>
        <p class="fineprint">
          Use your account's own password. App passwords are for mail apps on your phone or computer.
        </p>
      </form>
    </main>
  );
}
