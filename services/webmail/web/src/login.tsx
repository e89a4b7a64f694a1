import type { ComponentChildren } from 'preact';
import { useRef, useState } from 'preact/hooks';
import { api, ApiError, setCsrf, type SessionInfo } from './api.ts';
import { Icon } from './icons.tsx';

/** Refusals after which the login starts again from the password. */
const LOGIN_ENDED = new Set(['too_many_codes', 'not_logged_in', 'other_account']);

/** The login page. */
export function Login(props: {
  notice?: string | undefined;
  secondFactorFor?: string | undefined;
  onDone: (s: SessionInfo) => void;
}) {
  return (
    <main class="login" aria-labelledby="login-title">
      <LoginForm {...props} titleId="login-title" title="Log in to your mail" />
    </main>
  );
}

/**
 * The login form; then, for an account that has one, the second step. The login page's,
 * and the one over the editor when the session ended while a message was being written.
 */
export function LoginForm(props: {
  titleId: string;
  title: string;
  notice?: string | undefined;
  secondFactorFor?: string | undefined;
  /** The address the form starts with. */
  username?: string;
  /**
   * The only account this form may log in (the one a message was written from): another
   * address is refused before any login, so no session of another account is made here.
   */
  onlyAccount?: string;
  onDone: (s: SessionInfo) => void | Promise<void>;
  /** After the button (another way out of a dialog). */
  children?: ComponentChildren;
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
        const typed = user.current!.value.trim();
        if (props.onlyAccount && typed.toLowerCase() !== props.onlyAccount.toLowerCase()) {
          throw new ApiError(
            403,
            'other_account',
            `${typed} is not the account this message is written from: log in as ` +
              `${props.onlyAccount} to save or send it, or discard the message.`,
          );
        }
        const fresh = await api.session();
        setCsrf(fresh.loginToken ?? '');
        s = await api.login(typed, pass.current!.value);
      }
      if (s.csrf) setCsrf(s.csrf);
      if (s.next === 'second-factor') {
        setSecond(s.account ?? '');
        setBusy(false);
        window.setTimeout(() => code.current?.focus(), 0);
        return;
      }
      await props.onDone(s);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : 'Login failed');
      setBusy(false);
      // the login under way was ended (or refused for another account): back to the password
      if (err instanceof ApiError && LOGIN_ENDED.has(err.code)) setSecond(null);
      if (pass.current) {
        pass.current.value = '';
        pass.current.focus();
      }
    }
  };

  return (
    <form
      class="login-card"
      onSubmit={(e) => void submit(e)}
      aria-describedby={error ? 'login-error' : undefined}
    >
      <div class="brand" aria-hidden="true">
        <Icon name="mail" class="brand-mark" /> Mailyard
      </div>
      <h1 id={props.titleId}>{second ? 'One more step' : props.title}</h1>
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
            defaultValue={props.username}
            // text, not email: Chromium refuses a UTF-8 local part or a Unicode domain,
            // both of which an account can have (RFC 6531)
            type="text"
            inputMode="email"
            autoComplete="username"
            required
            autoFocus={!props.username}
            placeholder="you@example.org"
          />
          <label for="password">Password</label>
          <input
            id="password"
            ref={pass}
            type="password"
            autoComplete="current-password"
            required
            autoFocus={!!props.username}
          />
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
      {props.children}
    </form>
  );
}

const otherAccount = (other: string, account: string) =>
  `You logged in as ${other}, and this message is written from ${account}: it is not ` +
  `saved or sent from another account. Log in as ${account}, or discard the message.`;

/**
 * Over the editor when the session ended while a message was being written: the same
 * login, for the account the message is written from only. Another account's login is
 * ended at once: the message is not saved or sent from an account it was not written in.
 */
export function SignInAgain(props: {
  account: string;
  why: string;
  onDone: () => void;
  onLater: () => void;
}) {
  const done = async () => {
    // the token of the session the browser now holds, and whose it is
    const s = await api.session();
    if (!s.authenticated) throw new ApiError(401, 'not_logged_in', 'The login did not last: log in again');
    if (s.account !== props.account) {
      // (an address the form let through that names another account): that login ends here
      setCsrf('');
      const out = await api.logout().then(
        () => true,
        () =>
          api.logout().then(
            () => true,
            () => false,
          ),
      );
      throw new ApiError(
        403,
        'other_account',
        otherAccount(s.account ?? 'another account', props.account) +
          (out ? '' : ` This browser is still logged in as ${s.account ?? 'that account'}: log it out.`),
      );
    }
    setCsrf(s.csrf ?? '');
    props.onDone();
  };
  return (
    <div class="sign-in-again">
      <div role="dialog" aria-modal="true" aria-labelledby="sign-in-again-title">
        <LoginForm
          titleId="sign-in-again-title"
          title="Your session has ended"
          notice={`${props.why}. What you are writing is kept here: log in again as ${props.account} to save or send it.`}
          username={props.account}
          onlyAccount={props.account}
          onDone={done}
        >
          <button type="button" onClick={props.onLater}>
            Not now
          </button>
        </LoginForm>
      </div>
    </div>
  );
}
