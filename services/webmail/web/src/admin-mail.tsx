// The deferred mail, the dead letters, the policy lists and access tables, explanations, the audit log.
import { useRef, useState } from 'preact/hooks';
import { admin, type AdminDeadLetter, type AdminDeadLetterMessage, type AdminExplain } from './admin-api.ts';
import { AdminTable, Card, LoadError, Outcome, useAction, useLoad, when } from './admin-ui.tsx';
import { formatSize, plural } from './format.ts';

/**
 * The entries grouped by queue id, in the order they came: a queue id whose recipients
 * went to outbound in several messages is one item, as mailq shows one per queue id.
 */
function byQueueId<T extends { queueId: string }>(entries: T[]): T[][] {
  const groups = new Map<string, T[]>();
  for (const e of entries) groups.set(e.queueId, [...(groups.get(e.queueId) ?? []), e]);
  return [...groups.values()];
}

export function QueuePage() {
  const { data, error, reload } = useLoad(() => admin.queue());
  const act = useAction();
  const [shown, setShown] = useState<{ queueId: string; headers: string } | null>(null);
  const run = (fn: () => Promise<string>) =>
    void act.run(async () => {
      const text = await fn();
      setShown(null);
      await reload();
      return text;
    });

  return (
    <Card id="queue-title" title="Deferred mail">
      <p>
        Mail waiting for another try: the receiving server refused it for now or could not be reached, or a
        mailbox here could not be written to or an alias is over its limit.
      </p>
      <LoadError error={error} />
      {data && !data.messages.length && <p role="status">The queue is empty.</p>}
      <ul class="queue-list" aria-label="Deferred messages">
        {byQueueId(data?.messages ?? []).map((parts) => {
          const m = parts[0]!;
          return (
            <li key={m.queueId}>
              <div>
                <strong>{m.queueId}</strong> from &lt;{m.mailFrom}&gt; · {formatSize(m.size)} · received{' '}
                {when(m.receivedAt)}
              </div>
              {parts.map((part) => (
                <div key={part.recipients.join(',')}>
                  <div>to {part.recipients.join(', ')}</div>
                  <p class="fineprint">
                    {part.attempts} attempts · next try {when(part.nextTry)}
                  </p>
                  {part.lastError && <p class="last-error">{part.lastError}</p>}
                </div>
              ))}
              <div class="actions">
                <button
                  onClick={() => void act.run(async () => setShown(await admin.queued(m.queueId)))}
                  aria-label={`Show ${m.queueId}`}
                >
                  Show
                </button>
                <button
                  onClick={() =>
                    run(async () => (await admin.retry(m.queueId), `${m.queueId} goes out again now`))
                  }
                  aria-label={`Retry ${m.queueId} now`}
                >
                  Retry now
                </button>
                <button
                  class="danger"
                  onClick={() => {
                    if (confirm(`Delete ${m.queueId}, for all its recipients, without telling the sender?`))
                      run(async () => (await admin.deleteQueued(m.queueId), `Deleted ${m.queueId}`));
                  }}
                  aria-label={`Delete ${m.queueId}`}
                >
                  Delete
                </button>
              </div>
              {shown?.queueId === m.queueId && (
                <pre class="headers" aria-label={`Headers of ${m.queueId}`}>
                  {shown.headers}
                </pre>
              )}
            </li>
          );
        })}
      </ul>
      <p class="inline-form">
        <button onClick={() => void reload()}>Refresh</button>
        {!!data?.messages.length && (
          <button
            onClick={() =>
              run(async () => `${plural((await admin.retryAll()).retried, 'message')} queued for delivery`)
            }
          >
            Retry all now
          </button>
        )}
      </p>
      <Outcome outcome={act.outcome} />
    </Card>
  );
}

/** What a dead letter of a queue id says: where from, after how many runs, when, why, to whom. */
function DeadLetterFacts(props: { letter: AdminDeadLetter }) {
  const l = props.letter;
  return (
    <div>
      {l.recipients.length > 0 && <div>to {l.recipients.join(', ')}</div>}
      <p class="fineprint">
        queue {l.originalQueue ?? 'unknown'} ·{' '}
        {l.attempts ? plural(l.attempts, 'attempt') : 'attempts unknown'} · dead-lettered{' '}
        {l.deadLetteredAt ? when(l.deadLetteredAt) : 'at a time not recorded'} · {formatSize(l.size)}
      </p>
      <p class="last-error">{l.reason ?? 'No reason recorded'}</p>
      {!l.requeueable && <p class="fineprint">Requeue cannot send it back: delete it once done with.</p>}
    </div>
  );
}

export function DeadLettersPage() {
  const { data, error, reload } = useLoad(() => admin.deadLetters());
  const act = useAction();
  const [shown, setShown] = useState<AdminDeadLetterMessage | null>(null);
  // a requeue may send some back and keep others (409): the list is read again either way
  const run = (fn: () => Promise<string>) =>
    void act.run(async () => {
      try {
        return await fn();
      } finally {
        setShown(null);
        await reload();
      }
    });

  return (
    <Card id="dead-letters-title" title="Dead letters">
      <p>
        Messages no service could handle, held here until you act. Once the cause is fixed (a limit raised, a
        service back), requeue them: each goes back where it came from and runs afresh, with all its attempts.
        Delete the ones you are done with.
      </p>
      <LoadError error={error} />
      {data && !data.letters.length && <p role="status">There are no dead letters.</p>}
      <ul class="queue-list" aria-label="Dead letters">
        {byQueueId(data?.letters ?? []).map((letters) => {
          const first = letters[0]!;
          const id = first.queueId;
          const from = [...new Set(letters.flatMap((l) => (l.requeueable ? [l.originalQueue] : [])))];
          return (
            <li key={id}>
              <div>
                <strong>{id}</strong>{' '}
                {first.mailFrom === null ? '(no envelope)' : <>from &lt;{first.mailFrom}&gt;</>}
              </div>
              {letters.map((l, i) => (
                <DeadLetterFacts key={i} letter={l} />
              ))}
              <div class="actions">
                <button
                  onClick={() => void act.run(async () => setShown(await admin.deadLetter(id)))}
                  aria-label={`Show ${id}`}
                >
                  Show
                </button>
                {letters.some((l) => l.requeueable) && (
                  <button
                    onClick={() => {
                      if (confirm(`Requeue ${id}? It goes back to ${from.join(' and ')} and runs afresh.`))
                        run(async () => (await admin.requeue(id), `${id} requeued: it runs afresh`));
                    }}
                    aria-label={`Requeue ${id}`}
                  >
                    Requeue
                  </button>
                )}
                <button
                  class="danger"
                  onClick={() => {
                    if (
                      confirm(`Delete ${id} for good? Nobody is told, and it cannot be requeued afterwards.`)
                    )
                      run(async () => (await admin.deleteDeadLetter(id), `Deleted ${id}`));
                  }}
                  aria-label={`Delete ${id}`}
                >
                  Delete
                </button>
              </div>
              {shown?.queueId === id && (
                <pre
                  class="headers"
                  aria-label={`${first.mailFrom === null ? 'Content' : 'Headers'} of ${id}`}
                >
                  {shown.headers}
                </pre>
              )}
            </li>
          );
        })}
      </ul>
      <p class="inline-form">
        <button onClick={() => void reload()}>Refresh</button>
        {data?.letters.some((l) => l.requeueable) && (
          <button
            onClick={() => {
              if (confirm('Requeue every dead letter? Each goes back where it came from and runs afresh.'))
                run(async () => `${plural((await admin.requeueAll()).requeued, 'dead letter')} requeued`);
            }}
          >
            Requeue all
          </button>
        )}
      </p>
      <Outcome outcome={act.outcome} />
    </Card>
  );
}

/** Tables the lists name (check_client_access client_access): the ones worth offering. */
const tablesIn = (lists: { entries: string[] }[]) => [
  ...new Set(lists.flatMap((l) => l.entries.flatMap((e) => /^check_\w+_access\s+(\S+)/.exec(e)?.[1] ?? []))),
];

export function PolicyPage() {
  const { data, error, reload } = useLoad(() => admin.policy());
  const act = useAction();

  return (
    <>
      <Card id="policy-title" title="Restriction lists">
        <p>
          One check a line, in the order they run at that stage of the SMTP conversation (as Postfix’s
          smtpd_*_restrictions). Every entry is checked before the list is saved.
        </p>
        <LoadError error={error} />
        {data?.lists.map((l) => (
          <form
            key={`${l.name}:${l.entries.join(',')}`}
            class="policy-list"
            onSubmit={(e) => {
              e.preventDefault();
              const text = e.currentTarget.elements.namedItem('entries') as HTMLTextAreaElement;
              void act.run(async () => {
                const entries = text.value
                  .split('\n')
                  .map((x) => x.trim())
                  .filter(Boolean);
                const res = await admin.setList(l.name, entries, l.entries);
                await reload();
                return `Saved ${res.list}`;
              });
            }}
          >
            <label for={`list-${l.name}`}>
              {l.name} <span class="fineprint">({l.stage} stage)</span>
            </label>
            <textarea
              id={`list-${l.name}`}
              name="entries"
              rows={Math.max(2, l.entries.length + 1)}
              spellcheck={false}
              defaultValue={l.entries.join('\n')}
            />
            <div class="actions">
              <button type="submit" class="primary" disabled={act.busy} aria-label={`Save ${l.name}`}>
                Save
              </button>
              <button
                type="button"
                onClick={() =>
                  void act.run(async () => {
                    await admin.resetList(l.name);
                    await reload();
                    return `${l.name} is back to its default`;
                  })
                }
                aria-label={`Reset ${l.name} to its default`}
              >
                Default
              </button>
            </div>
          </form>
        ))}
        <Outcome outcome={act.outcome} />
        {data && (
          <details>
            <summary>The checks a list may name</summary>
            <pre class="checks">{data.checks.join('\n')}</pre>
          </details>
        )}
      </Card>
      {data && <AccessTables tables={tablesIn(data.lists)} />}
      <Explain />
    </>
  );
}

function AccessTables(props: { tables: string[] }) {
  const [table, setTable] = useState(props.tables[0] ?? 'client_access');
  const { data, error, reload } = useLoad(() => admin.access(table), [table]);
  const act = useAction();
  const name = useRef<HTMLInputElement>(null);
  const key = useRef<HTMLInputElement>(null);
  const action = useRef<HTMLInputElement>(null);

  return (
    <Card id="access-title" title="Access tables">
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setTable(name.current!.value.trim());
        }}
      >
        <label for="access-table">Table</label>
        <input id="access-table" ref={name} list="access-tables" value={table} required maxLength={64} />
        <datalist id="access-tables">
          {props.tables.map((t) => (
            <option key={t} value={t} />
          ))}
        </datalist>
        <button type="submit">Open</button>
      </form>
      <LoadError error={error} />
      <AdminTable
        caption={`Entries of ${table}`}
        columns={['Client, sender or recipient', 'Action']}
        action="Remove"
      >
        {data?.entries.map((e) => (
          <tr key={e.key}>
            <th scope="row" data-label="Key">
              {e.key}
            </th>
            <td data-label="Action">{e.action}</td>
            <td class="actions">
              <button
                class="danger"
                onClick={() =>
                  void act.run(async () => {
                    await admin.accessDel(table, e.key);
                    await reload();
                    return `Removed ${e.key} from ${table}`;
                  })
                }
                aria-label={`Remove ${e.key} from ${table}`}
              >
                Remove
              </button>
            </td>
          </tr>
        ))}
      </AdminTable>
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          void act.run(async () => {
            const res = await admin.accessSet(table, key.current!.value.trim(), action.current!.value.trim());
            key.current!.value = '';
            action.current!.value = '';
            await reload();
            return `${res.key} added to ${table}`;
          });
        }}
      >
        <label for="access-key">Address, domain or network</label>
        <input id="access-key" ref={key} required maxLength={512} placeholder="192.0.2.0/24" />
        <label for="access-action">Action</label>
        <input id="access-action" ref={action} required maxLength={512} placeholder="REJECT spam source" />
        <button type="submit" class="primary" disabled={act.busy}>
          Add
        </button>
      </form>
      <Outcome outcome={act.outcome} />
    </Card>
  );
}

function Explain() {
  const [record, setRecord] = useState<AdminExplain | null>(null);
  const act = useAction();
  const id = useRef<HTMLInputElement>(null);
  return (
    <Card id="explain-title" title="Why was mail refused?">
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setRecord(null);
          void act.run(async () => setRecord(await admin.explain(id.current!.value.trim())));
        }}
      >
        <label for="explain-id">Queue id, or the “ref” at the end of the refusal</label>
        <input id="explain-id" ref={id} required maxLength={64} />
        <button type="submit">Explain</button>
      </form>
      <Outcome outcome={act.outcome} />
      {record && (
        <div role="region" aria-label={`Explanation of ${record.id}`} class="explain">
          <p>
            <strong>{record.action}</strong> at the {record.stage} stage, {when(record.at)}: client{' '}
            {record.client}
            {record.sender !== null ? `, from <${record.sender}>` : ''}
            {record.recipient ? `, to <${record.recipient}>` : ''}
          </p>
          {record.reply && <p>Reply: {record.reply}</p>}
          <ul>
            {record.reasons.map((r, i) => (
              <li key={i}>
                {r.check} = {r.result}
                {r.score !== undefined ? ` (score ${r.score})` : ''}
                {r.detail ? `: ${r.detail}` : ''}
              </li>
            ))}
          </ul>
        </div>
      )}
    </Card>
  );
}

export function AuditPage() {
  const [offset, setOffset] = useState(0);
  const { data, error } = useLoad(() => admin.audit(offset), [offset]);
  return (
    <Card id="audit-title" title="Audit log">
      <p>Every change made here or with the mailyard command, newest first, with who made it.</p>
      <LoadError error={error} />
      <table class="admin-table audit">
        <caption class="sr-only">Audit log entries</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">Who</th>
            <th scope="col">Action</th>
            <th scope="col">On</th>
            <th scope="col">Details</th>
          </tr>
        </thead>
        <tbody>
          {data?.entries.map((e, i) => (
            <tr key={`${e.at}-${i}`}>
              <td data-label="When">{when(e.at)}</td>
              <td data-label="Who">{e.actor}</td>
              <td data-label="Action">{e.action}</td>
              <td data-label="On">{e.target}</td>
              <td data-label="Details">
                {Object.entries(e.detail ?? {})
                  .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`)
                  .join(' ')}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && (
        <p class="pager">
          <button disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - data.limit))}>
            Newer
          </button>
          <button disabled={!data.more} onClick={() => setOffset(offset + data.limit)}>
            Older
          </button>
        </p>
      )}
    </Card>
  );
}
