// Accounts (quota and usage, lock, admin role, password, two-factor, app passwords) and aliases.
import { useEffect, useRef, useState } from 'preact/hooks';
import { admin, type AdminAccount, type AdminAppPassword } from './admin-api.ts';
import { Card, LoadError, Outcome, useAction, useLoad, when } from './admin-ui.tsx';
import { formatSize } from './format.ts';

const PAGE = 25;

/** An account's usage: `undefined` while it is being read, `null` when it could not be. */
function usageText(a: AdminAccount, usage: AdminAccount['usage'] | undefined): string {
  if (usage === undefined) return 'reading usage…';
  const limit = usage?.limit ?? null;
  const quota = a.quota === 0 || (a.quota === null && limit === null) ? 'no limit' : null;
  if (!usage) return `usage unknown${quota ? `, ${quota}` : ''}`;
  if (usage.used === null) return quota ?? 'usage unknown';
  return `${formatSize(usage.used)} of ${limit ? formatSize(limit) : 'no limit'}`;
}

export function AccountsPage(props: { me: string }) {
  const [q, setQ] = useState('');
  const [offset, setOffset] = useState(0);
  // each answer keeps what it was asked for: the usage read after it asks the same
  const { data, error, reload } = useLoad(
    async () => ({ q, offset, ...(await admin.accounts({ q, offset, limit: PAGE, usage: false })) }),
    [q, offset],
  );
  // Usage takes an IMAP read per account, seconds for a page on a busy server: the page
  // is shown at once and its usage filled in when it comes, for the rows shown then.
  const [usage, setUsage] = useState<{ of: typeof data; by: Map<string, AdminAccount['usage']> } | null>(
    null,
  );
  useEffect(() => {
    if (!data?.accounts.length) return;
    let current = true;
    void admin.accounts({ q: data.q, offset: data.offset, limit: PAGE, usage: true }).then(
      (u) => current && setUsage({ of: data, by: new Map(u.accounts.map((a) => [a.address, a.usage])) }),
      () => current && setUsage({ of: data, by: new Map() }),
    );
    return () => void (current = false);
  }, [data]);
  const usageOf = (a: AdminAccount) =>
    usage && usage.of === data ? (usage.by.get(a.address) ?? null) : undefined;
  // the page shown is gone (its last accounts deleted, here or by another admin): show
  // the last page there is now, by the total the answer gives, in one request
  useEffect(() => {
    if (data && !data.accounts.length && offset > 0)
      setOffset(data.total ? Math.floor((data.total - 1) / PAGE) * PAGE : 0);
  }, [data]);
  const act = useAction();
  const [apps, setApps] = useState<{ account: string; list: AdminAppPassword[] } | null>(null);
  const search = useRef<HTMLInputElement>(null);
  const address = useRef<HTMLInputElement>(null);
  const password = useRef<HTMLInputElement>(null);
  const isAdmin = useRef<HTMLInputElement>(null);

  const add = (e: Event) => {
    e.preventDefault();
    void act.run(async () => {
      const { account } = await admin.addAccount(
        address.current!.value.trim(),
        password.current!.value,
        isAdmin.current!.checked,
      );
      address.current!.value = '';
      password.current!.value = '';
      isAdmin.current!.checked = false;
      await reload();
      return `Added ${account}`;
    });
  };
  const action = (fn: () => Promise<string>) =>
    void act.run(async () => {
      const text = await fn();
      await reload();
      return text;
    });
  const lock = (a: AdminAccount) =>
    action(async () =>
      a.locked
        ? (await admin.unlock(a.address), `Unlocked ${a.address}`)
        : (await admin.lock(a.address), `Locked ${a.address}: it can no longer log in anywhere`),
    );
  const role = (a: AdminAccount) => {
    if (a.admin && !confirm(`Take the admin role from ${a.address}? It can no longer use this console.`))
      return;
    action(async () =>
      a.admin
        ? (await admin.setAdmin(a.address, false), `${a.address} is no longer an admin`)
        : (await admin.setAdmin(a.address, true), `${a.address} is an admin: it may use this console`),
    );
  };
  const setPassword = (a: AdminAccount, input: HTMLInputElement) =>
    action(async () => {
      await admin.setPassword(a.address, input.value);
      input.value = '';
      return `Set the password of ${a.address}; its sessions have ended`;
    });
  const quota = (a: AdminAccount, value: string) =>
    action(async () => {
      await admin.quota(a.address, value);
      return `Quota of ${a.address} set to ${value}`;
    });
  const reset = (a: AdminAccount) => {
    if (!confirm(`Turn two-factor login off for ${a.address}? Its password alone will log in again.`)) return;
    action(async () => (await admin.resetTwoFactor(a.address), `Two-factor login is off for ${a.address}`));
  };
  const remove = (a: AdminAccount) => {
    if (!confirm(`Delete the account ${a.address}? Its mail stays on disk.`)) return;
    action(async () => {
      const { warning } = await admin.delAccount(a.address);
      // deleted either way; the warning names what deleting again will finish
      return warning ?? `Deleted ${a.address}`;
    });
  };
  const showApps = (account: string) =>
    void act.run(async () => {
      setApps({ account, list: (await admin.appPasswords(account)).appPasswords });
    });
  const revoke = (account: string, name: string) =>
    void act.run(async () => {
      await admin.revokeAppPassword(account, name);
      setApps({ account, list: (await admin.appPasswords(account)).appPasswords });
      return `Revoked “${name}” of ${account}`;
    });

  return (
    <>
      <Card id="accounts-title" title="Accounts">
        <form
          class="inline-form"
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            setOffset(0);
            setQ(search.current!.value.trim());
          }}
        >
          <label for="account-search">Find an account</label>
          <input id="account-search" ref={search} type="search" maxLength={320} />
          <button type="submit">Find</button>
        </form>
        <LoadError error={error} />
        <ul class="account-list" aria-label="Accounts">
          {data?.accounts.map((a) => (
            <li key={a.address} class="account-row">
              <div class="account-head">
                <strong>{a.address}</strong>
                {a.admin && <span class="badge">admin</span>}
                {a.locked && <span class="badge missing">locked</span>}
                {a.twoFactor && <span class="badge ok">two-factor</span>}
              </div>
              <p class="fineprint">
                {usageText(a, usageOf(a))} · created {when(a.created)}
                {a.locked ? ` · locked ${when(a.locked)}` : ''}
              </p>
              <div class="actions">
                {a.address !== props.me && (
                  <button
                    class={a.locked ? '' : 'danger'}
                    onClick={() => lock(a)}
                    aria-label={`${a.locked ? 'Unlock' : 'Lock'} ${a.address}`}
                  >
                    {a.locked ? 'Unlock' : 'Lock'}
                  </button>
                )}
                <form
                  class="quota-form"
                  onSubmit={(e) => {
                    e.preventDefault();
                    const input = e.currentTarget.elements.namedItem('quota') as HTMLInputElement;
                    quota(a, input.value.trim());
                  }}
                >
                  <label>
                    <span class="sr-only">Quota of {a.address}</span>
                    <input
                      name="quota"
                      size={9}
                      maxLength={32}
                      placeholder={
                        a.quota === null ? 'default' : a.quota === 0 ? 'unlimited' : formatSize(a.quota)
                      }
                      required
                    />
                  </label>
                  <button type="submit" aria-label={`Set the quota of ${a.address}`}>
                    Set quota
                  </button>
                </form>
                {a.address !== props.me && (
                  <form
                    class="quota-form"
                    onSubmit={(e) => {
                      e.preventDefault();
                      setPassword(a, e.currentTarget.elements.namedItem('password') as HTMLInputElement);
                    }}
                  >
                    <label>
                      <span class="sr-only">New password of {a.address}</span>
                      <input
                        name="password"
                        type="password"
                        size={12}
                        placeholder="new password"
                        autoComplete="new-password"
                        required
                      />
                    </label>
                    <button type="submit" aria-label={`Set the password of ${a.address}`}>
                      Set password
                    </button>
                  </form>
                )}
                {(a.address !== props.me || !a.admin) && (
                  <button
                    onClick={() => role(a)}
                    aria-label={
                      a.admin ? `Take the admin role from ${a.address}` : `Make ${a.address} an admin`
                    }
                  >
                    {a.admin ? 'Remove admin' : 'Make admin'}
                  </button>
                )}
                <button onClick={() => showApps(a.address)} aria-label={`App passwords of ${a.address}`}>
                  App passwords
                </button>
                {a.twoFactor && (
                  <button onClick={() => reset(a)} aria-label={`Reset two-factor login of ${a.address}`}>
                    Reset two-factor
                  </button>
                )}
                {a.address !== props.me && (
                  <button class="danger" onClick={() => remove(a)} aria-label={`Delete ${a.address}`}>
                    Delete
                  </button>
                )}
              </div>
              {apps?.account === a.address && (
                <div class="app-list" aria-label={`App passwords of ${a.address}`} role="region">
                  {apps.list.length ? (
                    <ul>
                      {apps.list.map((p) => (
                        <li key={p.name}>
                          {p.name} · created {when(p.created)} · last used{' '}
                          {p.lastUsed ? `${when(p.lastUsed)} from ${p.lastIp ?? '?'}` : 'never'}{' '}
                          <button
                            class="danger"
                            onClick={() => revoke(a.address, p.name)}
                            aria-label={`Revoke ${p.name} of ${a.address}`}
                          >
                            Revoke
                          </button>
                        </li>
                      ))}
                    </ul>
                  ) : (
                    <p>No app passwords.</p>
                  )}
                </div>
              )}
            </li>
          ))}
        </ul>
        {data && (
          <p class="pager">
            <button disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>
              Previous
            </button>
            <span>
              {data.total
                ? `${offset + 1}–${Math.min(offset + PAGE, data.total)} of ${data.total}`
                : 'No accounts'}
            </span>
            <button disabled={offset + PAGE >= data.total} onClick={() => setOffset(offset + PAGE)}>
              Next
            </button>
          </p>
        )}
        <Outcome outcome={act.outcome} />
      </Card>
      <Card id="new-account-title" title="New account">
        <form onSubmit={add} class="stacked-form">
          <label for="new-address">Address</label>
          {/* not type=email: browsers refuse a UTF-8 local part (RFC 6531), which the CLI and the directory take */}
          <input
            id="new-address"
            ref={address}
            inputMode="email"
            required
            maxLength={320}
            autoComplete="off"
            spellcheck={false}
          />
          <label for="new-password">Password (at least 10 characters)</label>
          <input id="new-password" ref={password} type="password" required autoComplete="new-password" />
          <label class="check">
            <input ref={isAdmin} type="checkbox" /> Administrator (may use this console)
          </label>
          <button type="submit" class="primary" disabled={act.busy}>
            Add account
          </button>
        </form>
      </Card>
    </>
  );
}

export function AliasesPage() {
  const { data, error, reload } = useLoad(() => admin.aliases());
  const act = useAction();
  const source = useRef<HTMLInputElement>(null);
  const targets = useRef<HTMLInputElement>(null);

  const add = (e: Event) => {
    e.preventDefault();
    void act.run(async () => {
      const list = targets.current!.value.split(/[\s,]+/).filter(Boolean);
      const res = await admin.addAlias(source.current!.value.trim(), list);
      source.current!.value = '';
      targets.current!.value = '';
      await reload();
      // the targets are added to those it had: the answer names all it delivers to now
      return `${res.source} now delivers to ${res.targets.join(', ')}`;
    });
  };
  const remove = (src: string, target?: string) =>
    void act.run(async () => {
      await admin.delAlias(src, target);
      await reload();
      return target ? `Removed ${target} from ${src}` : `Deleted ${src}`;
    });

  return (
    <Card id="aliases-title" title="Aliases and catch-alls">
      <p>An alias delivers to its targets, local or elsewhere; @domain is the domain’s catch-all.</p>
      <LoadError error={error} />
      <ul class="alias-list" aria-label="Aliases">
        {data?.aliases.map((a) => (
          <li key={a.source}>
            <strong>{a.source.startsWith('@') ? `${a.source} (catch-all)` : a.source}</strong> →{' '}
            {a.targets.map((t) => (
              <span class="target" key={t}>
                {t}
                {a.targets.length > 1 && (
                  <button
                    class="icon-button"
                    onClick={() => remove(a.source, t)}
                    aria-label={`Remove ${t} from ${a.source}`}
                  >
                    ×
                  </button>
                )}
              </span>
            ))}
            <button class="danger" onClick={() => remove(a.source)} aria-label={`Delete ${a.source}`}>
              Delete
            </button>
          </li>
        ))}
      </ul>
      <form onSubmit={add} class="stacked-form">
        <label for="alias-source">Alias (address, or @domain for a catch-all)</label>
        <input id="alias-source" ref={source} required maxLength={320} placeholder="team@example.org" />
        <label for="alias-targets">Deliver to (addresses, separated by commas)</label>
        <input id="alias-targets" ref={targets} required placeholder="alice@example.org, bob@example.org" />
        <button type="submit" class="primary" disabled={act.busy}>
          Add alias
        </button>
      </form>
      <Outcome outcome={act.outcome} />
    </Card>
  );
}
