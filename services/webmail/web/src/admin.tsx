// The admin console: one page per area, under the Admin entry that only admins see.
import { useRef, useState } from 'preact/hooks';
import { admin, type AdminDkimKey, type AdminDomainAdded, type AdminRecord } from './admin-api.ts';
import { AccountsPage, AliasesPage } from './admin-accounts.tsx';
import { DnsPage } from './admin-dns.tsx';
import { AuditPage, DeadLettersPage, PolicyPage, QueuePage } from './admin-mail.tsx';
import { AdminTable, Card, Copyable, LoadError, Outcome, useAction, useLoad, when } from './admin-ui.tsx';
import { Icon } from './icons.tsx';

const SECTIONS = [
  ['domains', 'Domains'],
  ['accounts', 'Accounts'],
  ['aliases', 'Aliases'],
  ['dkim', 'DKIM keys'],
  ['dns', 'DNS check'],
  ['queue', 'Queue'],
  ['dead-letters', 'Dead letters'],
  ['policy', 'Policy'],
  ['audit', 'Audit log'],
] as const;
export type Section = (typeof SECTIONS)[number][0];

const sectionFromHash = (): Section => {
  const s = new URLSearchParams(location.hash.slice(1)).get('admin');
  return SECTIONS.some(([k]) => k === s) ? (s as Section) : 'domains';
};

export function AdminPage(props: { account: string; onBack: () => void }) {
  const [section, setSection] = useState<Section>(sectionFromHash);
  const [dnsDomain, setDnsDomain] = useState<string | null>(null);
  const open = (s: Section) => {
    setSection(s);
    history.replaceState(null, '', `#admin=${s}`);
  };
  const title = SECTIONS.find(([k]) => k === section)![1];
  return (
    <div class="account-page admin-page">
      <header class="topbar">
        <span class="brand">
          <Icon name="mail" class="brand-mark" />
          Mailyard
        </span>
        <h1>Admin</h1>
        <span class="account" title={props.account}>
          {props.account}
        </span>
        <button
          onClick={() => {
            history.replaceState(null, '', location.pathname);
            props.onBack();
          }}
        >
          Back to mail
        </button>
      </header>
      <nav class="admin-nav" aria-label="Admin sections">
        <ul>
          {SECTIONS.map(([key, label]) => (
            <li key={key}>
              <a
                href={`#admin=${key}`}
                aria-current={key === section ? 'page' : undefined}
                onClick={(e) => {
                  e.preventDefault();
                  open(key);
                }}
              >
                {label}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main class="account-main admin-main" aria-label={title}>
        {section === 'domains' && (
          <DomainsPage
            onCheck={(d) => {
              setDnsDomain(d);
              open('dns');
            }}
          />
        )}
        {section === 'accounts' && <AccountsPage me={props.account} />}
        {section === 'aliases' && <AliasesPage />}
        {section === 'dkim' && <DkimPage />}
        {section === 'dns' && <DnsPage initial={dnsDomain} />}
        {section === 'queue' && <QueuePage />}
        {section === 'dead-letters' && <DeadLettersPage />}
        {section === 'policy' && <PolicyPage />}
        {section === 'audit' && <AuditPage />}
      </main>
    </div>
  );
}

/** The records a domain needs, each ready to paste into its zone. */
export function RecordList(props: { records: AdminRecord[]; label: string }) {
  return (
    <ul class="records" aria-label={props.label}>
      {props.records.map((r) => (
        <li key={`${r.purpose}-${r.name}`}>
          <span class="record-purpose">{r.purpose}</span>
          <Copyable value={r.zoneLine} label={`the ${r.purpose} record`} />
        </li>
      ))}
    </ul>
  );
}

function DomainsPage(props: { onCheck: (domain: string) => void }) {
  const { data, error, reload } = useLoad(() => admin.domains());
  const [added, setAdded] = useState<AdminDomainAdded | null>(null);
  const [shown, setShown] = useState<{ domain: string; records: AdminRecord[] } | null>(null);
  const act = useAction();
  const name = useRef<HTMLInputElement>(null);

  const add = (e: Event) => {
    e.preventDefault();
    void act.run(async () => {
      const res = await admin.addDomain(name.current!.value.trim());
      setAdded(res);
      setShown(null);
      name.current!.value = '';
      await reload();
      return `Added ${res.domain} with DKIM keys ${res.dkim.map((k) => k.selector).join(' and ')}`;
    });
  };
  const remove = (domain: string) => {
    if (
      !confirm(
        `Delete the domain ${domain} and its DKIM keys? Mail for it will no longer be accepted, nor signed.`,
      )
    )
      return;
    void act.run(async () => {
      const { dkim } = await admin.delDomain(domain);
      if (added?.domain === domain) setAdded(null);
      if (shown?.domain === domain) setShown(null);
      await reload();
      return dkim.length
        ? `Deleted ${domain} and its DKIM keys ${dkim.join(', ')}; their DNS records can go`
        : `Deleted ${domain}`;
    });
  };
  const records = (domain: string) =>
    void act.run(async () => {
      setShown(await admin.records(domain));
      setAdded(null);
    });

  return (
    <>
      <Card id="domains-title" title="Domains">
        <LoadError error={error} />
        <AdminTable
          caption="Local domains"
          columns={['Domain', 'Accounts', 'Aliases', 'DKIM']}
          action="Actions"
        >
          {data?.domains.map((d) => (
            <tr key={d.domain}>
              <th scope="row" data-label="Domain">
                {d.domain}
              </th>
              <td data-label="Accounts">{d.accounts}</td>
              <td data-label="Aliases">{d.aliases}</td>
              <td data-label="DKIM">{d.dkim.join(', ') || 'none: mail goes out unsigned'}</td>
              <td class="actions">
                <button onClick={() => records(d.domain)} aria-label={`DNS records of ${d.domain}`}>
                  Records
                </button>
                <button onClick={() => props.onCheck(d.domain)} aria-label={`Check the DNS of ${d.domain}`}>
                  Check DNS
                </button>
                <button class="danger" onClick={() => remove(d.domain)} aria-label={`Delete ${d.domain}`}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </AdminTable>
        <form onSubmit={add} class="inline-form">
          <label for="domain-name">New domain</label>
          <input id="domain-name" ref={name} required maxLength={253} placeholder="example.org" />
          <button type="submit" class="primary" disabled={act.busy}>
            Add domain
          </button>
        </form>
        <Outcome outcome={act.outcome} />
      </Card>
      {(added || shown) && (
        <Card id="records-title" title={`DNS records to publish for ${added?.domain ?? shown!.domain}`}>
          <p>
            Publish these in the domain’s zone. Its DKIM keys sign from now on: until their records are
            published, receivers cannot check the signatures.
          </p>
          <RecordList
            records={added?.records ?? shown!.records}
            label={`DNS records of ${added?.domain ?? shown!.domain}`}
          />
        </Card>
      )}
    </>
  );
}

const keyRecord = (k: AdminDkimKey): AdminRecord => ({
  purpose: `dkim:${k.selector}`,
  name: k.record.name,
  type: 'TXT',
  value: k.record.value,
  zoneLine: k.record.zoneLine,
});

function DkimPage() {
  const { data, error, reload } = useLoad(() => admin.dkim());
  const act = useAction();
  const domain = useRef<HTMLInputElement>(null);
  const algorithm = useRef<HTMLSelectElement>(null);
  const [rotation, setRotation] = useState<AdminRecord[] | null>(null);

  const generate = (e: Event) => {
    e.preventDefault();
    void act.run(async () => {
      const { key } = await admin.generateDkim(domain.current!.value.trim(), algorithm.current!.value);
      setRotation([keyRecord(key)]);
      await reload();
      return key.pending
        ? `Stored ${key.algorithm} key ${key.selector} for ${key.domain}; publish its record (below) and activate it once DNS shows it`
        : `Stored ${key.algorithm} key ${key.selector} for ${key.domain}; publish its record (below)`;
    });
  };
  const rotate = (d: string, algo: string) =>
    void act.run(async () => {
      const { key, replaces } = await admin.rotateDkim(d, algo);
      setRotation([key, ...replaces].map(keyRecord));
      await reload();
      if (!key.pending) return `${key.selector} signs ${d} from now on. Publish its record (below).`;
      return `${key.selector} is stored; ${replaces.map((k) => k.selector).join(', ')} signs ${d} until you activate it. Publish its record, keep the old ${replaces.length === 1 ? 'one' : 'ones'} published, and press Activate once DNS shows it.`;
    });
  const activate = (d: string, selector: string) =>
    void act.run(async () => {
      const { activated } = await admin.activateDkim(d, selector);
      await reload();
      return activated
        ? `${selector} signs ${d} from now on; keep the old record published until you retire the old key`
        : `${selector} already signs ${d}`;
    });
  const retire = (d: string, selector: string) => {
    if (!confirm(`Retire ${selector} of ${d}? Mail it signed earlier stops verifying once its record goes.`))
      return;
    void act.run(async () => {
      await admin.retireDkim(d, selector);
      await reload();
      return `Retired ${selector} of ${d}; remove its record from DNS`;
    });
  };

  return (
    <Card id="dkim-title" title="DKIM keys">
      <p>
        Mail is signed with the newest active key of each algorithm. A rotation makes a new key that waits
        until you activate it, which is refused until DNS shows its record; the old key signs meanwhile, and
        stays published until you retire it, so mail already on its way still verifies.
      </p>
      <LoadError error={error} />
      <AdminTable
        caption="DKIM keys"
        columns={['Domain', 'Selector', 'Algorithm', 'Created', 'State']}
        action="Actions"
      >
        {data?.keys.map((k) => (
          <tr key={`${k.domain}/${k.selector}`}>
            <td data-label="Domain">{k.domain}</td>
            <th scope="row" data-label="Selector">
              {k.selector}
            </th>
            <td data-label="Algorithm">{k.algorithm}</td>
            <td data-label="Created">{when(k.created)}</td>
            <td data-label="State">
              <span class={`badge ${k.signing ? 'ok' : 'wrong'}`}>
                {k.signing ? 'signing' : k.pending ? 'waiting for DNS' : 'retiring'}
              </span>
            </td>
            <td class="actions">
              <Copyable value={k.record.zoneLine} label={`the record of ${k.selector}`}>
                {k.record.name}
              </Copyable>
              {k.signing ? (
                <button
                  onClick={() => rotate(k.domain, k.algorithm)}
                  aria-label={`Rotate the ${k.algorithm} key of ${k.domain}`}
                >
                  Rotate
                </button>
              ) : (
                <>
                  {k.pending && (
                    <button
                      onClick={() => activate(k.domain, k.selector)}
                      aria-label={`Activate ${k.selector} of ${k.domain}`}
                    >
                      Activate
                    </button>
                  )}
                  <button
                    class="danger"
                    onClick={() => retire(k.domain, k.selector)}
                    aria-label={`Retire ${k.selector} of ${k.domain}`}
                  >
                    Retire
                  </button>
                </>
              )}
            </td>
          </tr>
        ))}
      </AdminTable>
      <form onSubmit={generate} class="inline-form">
        <label for="dkim-domain">Domain</label>
        <input id="dkim-domain" ref={domain} required maxLength={253} placeholder="example.org" />
        <label for="dkim-algo">Algorithm</label>
        <select id="dkim-algo" ref={algorithm}>
          <option value="rsa">RSA 2048</option>
          <option value="ed25519">Ed25519</option>
        </select>
        <button type="submit" class="primary" disabled={act.busy}>
          Generate key
        </button>
      </form>
      <Outcome outcome={act.outcome} />
      {rotation && <RecordList records={rotation} label="DKIM records to publish" />}
    </Card>
  );
}
