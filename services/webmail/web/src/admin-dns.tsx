// The DNS and deliverability check: what each domain's records should be and what DNS
// answers now, and the server's own name, reverse DNS, blocklists and certificate.
import { useRef, useState } from 'preact/hooks';
import { admin, type DnsStatus } from './admin-api.ts';
import { AdminTable, Card, Copyable, LoadError, useLoad, when } from './admin-ui.tsx';
import { plural } from './format.ts';

const STATUS_TEXT: Record<DnsStatus, string> = {
  ok: 'OK',
  wrong: 'Wrong',
  missing: 'Missing',
  unchecked: 'Not checked',
};

function Status(props: { status: DnsStatus }) {
  return <span class={`badge ${props.status}`}>{STATUS_TEXT[props.status]}</span>;
}

/** A zone-file line for an expected value, as it would be pasted. */
const zoneLine = (name: string, type: string, value: string) =>
  `${name.replace(/\.?$/, '.')} IN ${type} ${type === 'TXT' ? `"${value}"` : value}`;

const unavailable = (e: string | null) => (e ? `The DNS check cannot be read: ${e}` : null);

export function DnsPage(props: { initial: string | null }) {
  const domains = useLoad(() => admin.domains());
  const [domain, setDomain] = useState<string | null>(props.initial);
  const chosen = domain ?? domains.data?.domains[0]?.domain ?? null;
  const select = useRef<HTMLSelectElement>(null);
  return (
    <>
      <Card id="dns-domain-title" title="Domain records">
        <LoadError error={domains.error} />
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            setDomain(select.current!.value);
          }}
        >
          <label for="dns-domain">Domain</label>
          <select
            id="dns-domain"
            ref={select}
            value={chosen ?? ''}
            onChange={(e) => setDomain(e.currentTarget.value)}
          >
            {domains.data?.domains.map((d) => (
              <option key={d.domain} value={d.domain}>
                {d.domain}
              </option>
            ))}
          </select>
          <button type="submit">Check again</button>
        </form>
        {chosen && <DomainReport domain={chosen} key={chosen} />}
      </Card>
      <ServerReport />
    </>
  );
}

function DomainReport(props: { domain: string }) {
  const { data: report, error, reload } = useLoad(() => admin.dnsDomain(props.domain), [props.domain]);
  if (error)
    return (
      <p class="error" role="alert">
        {unavailable(error)}
      </p>
    );
  if (!report) return <p role="status">Checking {props.domain}…</p>;
  const bad = report.records.filter((r) => r.status !== 'ok').length;
  return (
    <div role="region" aria-label={`DNS of ${report.domain}`}>
      <p role="status" class={bad ? 'warning' : 'notice'}>
        {bad
          ? `${bad} of ${report.records.length} records ${bad === 1 ? 'needs' : 'need'} attention.`
          : `All ${report.records.length} records are right.`}{' '}
        <span class="fineprint">Checked {when(report.checkedAt)}.</span>{' '}
        <button class="link" onClick={() => void reload()}>
          Check again
        </button>
      </p>
      <ul class="dns-records">
        {report.records.map((r) => (
          <li key={`${r.kind}-${r.name}-${r.type}`} class={`dns-record ${r.status}`}>
            <div class="dns-head">
              <Status status={r.status} />
              <strong>{r.kind.toUpperCase()}</strong> <code>{r.name}</code> {r.type}
            </div>
            {r.detail && <p class="fineprint">{r.detail}</p>}
            <dl>
              <dt>Publish</dt>
              <dd>
                {r.expected.map((v) => (
                  <Copyable
                    key={v}
                    value={zoneLine(r.name, r.type, v)}
                    label={`the ${r.kind} record ${r.name}`}
                  >
                    {v}
                  </Copyable>
                ))}
              </dd>
              {r.status !== 'ok' && (
                <>
                  <dt>DNS answers</dt>
                  <dd>
                    {r.found.length ? (
                      r.found.map((v) => (
                        <code key={v} class={r.expected.includes(v) ? '' : 'diff-extra'}>
                          {v}
                        </code>
                      ))
                    ) : (
                      <em>nothing</em>
                    )}
                  </dd>
                </>
              )}
            </dl>
          </li>
        ))}
      </ul>
    </div>
  );
}

function ServerReport() {
  const { data, error, reload } = useLoad(() => admin.dnsServer());
  return (
    <Card id="dns-server-title" title="This server">
      {error && (
        <p class="error" role="alert">
          {unavailable(error)}
        </p>
      )}
      {data && (
        <>
          <p>
            Sends as <strong>{data.hostname}</strong>. Each address it sends from needs a reverse record (PTR)
            naming it, and the name must point back to the address.
          </p>
          <AdminTable
            caption={`Addresses of ${data.hostname}`}
            columns={['Address', 'Forward', 'Reverse (PTR)', 'Status']}
          >
            {data.addresses.map((a) => (
              <tr key={a.address}>
                <th scope="row" data-label="Address">
                  {a.address}
                </th>
                <td data-label="Forward">{a.forward ? `${data.hostname} → ${a.address}` : 'not in DNS'}</td>
                <td data-label="Reverse">{a.ptr.join(', ') || 'none'}</td>
                <td data-label="Status">
                  <Status status={a.status} />
                </td>
              </tr>
            ))}
          </AdminTable>
          <h3>Blocklists</h3>
          {data.dnsbl.length ? (
            <ul class="dnsbl" aria-label="Blocklists">
              {data.dnsbl.map((b) => (
                <li key={`${b.list}-${b.address}`}>
                  <span class={`badge ${!b.checked ? 'unchecked' : b.listed ? 'missing' : 'ok'}`}>
                    {!b.checked ? 'Not checked' : b.listed ? 'Listed' : 'Not listed'}
                  </span>{' '}
                  {b.address} on {b.list}
                </li>
              ))}
            </ul>
          ) : (
            <p>No blocklists configured.</p>
          )}
          <h3>TLS certificate</h3>
          <p>
            {data.tls.notAfter ? (
              <>
                {/* as mailyard dns check: under a fortnight left is worth a look */}
                <span class={`badge ${(data.tls.daysLeft ?? 0) >= 14 ? 'ok' : 'wrong'}`}>
                  {(data.tls.daysLeft ?? 0) < 0 ? 'expired' : `${plural(data.tls.daysLeft ?? 0, 'day')} left`}
                </span>{' '}
                valid until {when(data.tls.notAfter)}
              </>
            ) : (
              'No certificate found.'
            )}
          </p>
          <button onClick={() => void reload()}>Check again</button>
        </>
      )}
    </Card>
  );
}
