import { useEffect, useRef, useState } from 'preact/hooks';
import { api, bodyUrl, partUrl, type Folder, type Message } from './api.ts';
import { formatAddress, formatSize, fullDate } from './format.ts';
import { MoveTo } from './folders.tsx';
import { Icon } from './icons.tsx';

export type ReaderAction =
  | 'reply'
  | 'replyAll'
  | 'forward'
  | 'archive'
  | 'delete'
  | 'spam'
  | 'notSpam'
  | 'unread'
  | 'flag'
  | 'editDraft';

/** Names people understand for the policy service's checks. */
const CHECK_NAMES: Record<string, string> = {
  rspamd: 'Spam filter',
  spf: 'Sender address check (SPF)',
  dkim: 'Signature (DKIM)',
  dmarc: 'Sender domain policy (DMARC)',
  arc: 'Forwarding chain (ARC)',
  clamav: 'Virus scan',
  bulk: 'Bulk mail',
  access: 'Access rules',
  user_lists: 'Your block list',
  rbl: 'Blocklist',
};

function JunkReasons(props: { m: Message; inJunk: boolean }) {
  const { m } = props;
  const reasons = m.policy?.reasons ?? [];
  const byPolicy = m.policy?.verdict === 'junk';
  if (!props.inJunk && !byPolicy) return null;
  return (
    <section class="junk-reasons" aria-labelledby="junk-title">
      <h3 id="junk-title">Why is this in Junk?</h3>
      <ul>
        {m.flags.junk && <li>You marked it as spam.</li>}
        {byPolicy && reasons.length === 0 && <li>The mail filter judged it to be spam.</li>}
        {byPolicy &&
          reasons.map((r) => (
            <li key={`${r.check}-${r.result}`}>
              <strong>{CHECK_NAMES[r.check] ?? r.check}</strong>: {r.result}
              {r.detail ? ` (${r.detail})` : ''}
            </li>
          ))}
        {!m.flags.junk && !byPolicy && <li>It was moved here by a mail app or a filter.</li>}
      </ul>
    </section>
  );
}

export function Reader(props: {
  m: Message;
  folders: Folder[];
  specialOf: (path: string) => string | null;
  onAction: (a: ReaderAction) => void;
  onMove: (to: string) => void;
  onBack: () => void;
  onSenderAllowed: () => void;
  thread: number[];
  onOpenUid: (uid: number) => void;
}) {
  const { m } = props;
  const [remote, setRemote] = useState(m.privacy.remoteAllowed);
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    setRemote(m.privacy.remoteAllowed);
    heading.current?.focus();
  }, [m.uid, m.folder, m.privacy.remoteAllowed]);

  const use = props.specialOf(m.folder);
  const inJunk = use === '\\Junk';
  const isDraft = use === '\\Drafts' || m.flags.draft;
  const sender = m.from[0]?.address ?? '';
  const files = m.attachments.filter((a) => !a.inline);

  return (
    <article class="reader" aria-labelledby="reader-subject">
      <div class="toolbar" role="toolbar" aria-label="Message actions">
        <button class="back" onClick={props.onBack} aria-label="Back to the list">
          <Icon name="back" />
        </button>
        {isDraft ? (
          <button onClick={() => props.onAction('editDraft')}>Edit draft</button>
        ) : (
          <>
            <button onClick={() => props.onAction('reply')} title="Reply (r)">
              Reply
            </button>
            <button onClick={() => props.onAction('replyAll')} title="Reply to all (a)">
              Reply all
            </button>
            <button onClick={() => props.onAction('forward')} title="Forward (f)">
              Forward
            </button>
          </>
        )}
        <button onClick={() => props.onAction('archive')} title="Archive (e)">
          Archive
        </button>
        <button onClick={() => props.onAction('delete')} title="Delete (#)">
          Delete
        </button>
        {inJunk ? (
          <button onClick={() => props.onAction('notSpam')} title="Not spam (!)">
            Not spam
          </button>
        ) : (
          <button onClick={() => props.onAction('spam')} title="Spam (!)">
            Spam
          </button>
        )}
        <button onClick={() => props.onAction('unread')} title="Mark unread (Shift+U)">
          Mark unread
        </button>
        <button onClick={() => props.onAction('flag')} aria-pressed={m.flags.flagged} title="Flag (s)">
          {m.flags.flagged ? '★ Flagged' : '☆ Flag'}
        </button>
        <MoveTo folders={props.folders} from={m.folder} onMove={props.onMove} />
      </div>

      <header class="reader-head">
        <h2 id="reader-subject" tabIndex={-1} ref={heading}>
          {m.subject || '(no subject)'}
        </h2>
        <dl class="meta">
          <dt>From</dt>
          <dd>{m.from.map(formatAddress).join(', ')}</dd>
          {m.to.length > 0 && (
            <>
              <dt>To</dt>
              <dd>{m.to.map(formatAddress).join(', ')}</dd>
            </>
          )}
          {m.cc.length > 0 && (
            <>
              <dt>Cc</dt>
              <dd>{m.cc.map(formatAddress).join(', ')}</dd>
            </>
          )}
          {m.bcc.length > 0 && (
            <>
              <dt>Bcc</dt>
              <dd>{m.bcc.map(formatAddress).join(', ')}</dd>
            </>
          )}
          <dt>Date</dt>
          <dd>
            <time dateTime={m.date}>{fullDate(m.date)}</time>
          </dd>
        </dl>
        {props.thread.length > 1 && (
          <nav class="thread" aria-label="Conversation">
            {props.thread.length} messages in this conversation:{' '}
            {props.thread.map((uid, i) => (
              <button
                key={uid}
                class={`link${uid === m.uid ? ' current' : ''}`}
                aria-current={uid === m.uid ? 'true' : undefined}
                onClick={() => props.onOpenUid(uid)}
              >
                {i + 1}
              </button>
            ))}
          </nav>
        )}
      </header>

      <JunkReasons m={m} inJunk={inJunk} />

      {(m.privacy.blocked > 0 || m.privacy.trackers > 0 || m.privacy.unwrapped > 0) && (
        <div class="privacy" role="status">
          {m.privacy.blocked > 0 && !remote && (
            <p>
              {m.privacy.blocked} remote {m.privacy.blocked === 1 ? 'image was' : 'images were'} blocked to
              protect your privacy.{' '}
              <button class="link" onClick={() => setRemote(true)}>
                Show images
              </button>
              {sender && (
                <>
                  {' · '}
                  <button
                    class="link"
                    onClick={() => {
                      void api.allowSender(sender, true).then(() => {
                        setRemote(true);
                        props.onSenderAllowed();
                      });
                    }}
                  >
                    Always show images from {sender}
                  </button>
                </>
              )}
            </p>
          )}
          {m.privacy.trackers > 0 && (
            <p>
              {m.privacy.trackers} tracking {m.privacy.trackers === 1 ? 'pixel' : 'pixels'} removed.
            </p>
          )}
          {m.privacy.unwrapped > 0 && (
            <p>
              {m.privacy.unwrapped} tracked {m.privacy.unwrapped === 1 ? 'link goes' : 'links go'} straight to
              where {m.privacy.unwrapped === 1 ? 'it leads' : 'they lead'}.
            </p>
          )}
        </div>
      )}

      {files.length > 0 && (
        <section class="attachments" aria-label="Attachments">
          <ul>
            {files.map((a) => (
              <li key={a.part}>
                <a href={partUrl(m.folder, m.uid, a.part)} download={a.filename}>
                  {/^image\/(png|jpe?g|gif|webp)$/.test(a.type) ? (
                    <img src={partUrl(m.folder, m.uid, a.part, true)} alt="" class="thumb" loading="lazy" />
                  ) : (
                    <Icon name="file" />
                  )}
                  <span class="file-name">{a.filename}</span>
                  <span class="file-size">{formatSize(a.size)}</span>
                </a>
              </li>
            ))}
          </ul>
        </section>
      )}

      <iframe
        class="body"
        title="Message body"
        key={`${m.folder}/${m.uid}/${remote ? 1 : 0}`}
        src={bodyUrl(m.folder, m.uid, remote)}
        sandbox="allow-popups allow-popups-to-escape-sandbox"
        referrerpolicy="no-referrer"
      />
    </article>
  );
}
