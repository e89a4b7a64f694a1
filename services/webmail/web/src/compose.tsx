// Writing a message: identities, recipients, plain or simple rich text, attachments with
// progress and the size limit in sight, the draft saved in Drafts while typing.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, upload, type DraftBody } from './api.ts';
import { formatSize, htmlToPlain, textToHtml } from './format.ts';

interface FileItem {
  key: string;
  name: string;
  size: number;
  /** Upload id once uploaded, or a part of an existing message (forward, reopened draft). */
  ref: DraftBody['attachments'][number] | null;
  progress: number;
  error: string | null;
  abort?: () => void;
  /** Refused because the session ended: uploaded again once the user has logged in again. */
  again?: File;
}

const SAVE_AFTER_MS = 1500;

export function Compose(props: {
  initial: DraftBody;
  /** Attachments the draft already has (forwarded or reopened), with their names and sizes. */
  initialFiles: { name: string; size: number }[];
  identities: string[];
  attachmentLimit: number;
  /**
   * The session ended: what is typed stays here, unsaved, until the user has logged in
   * again as the same account; then it is saved, and Send works again.
   */
  signedOut: boolean;
  /** Asks for the login again (Send while signed out). */
  onSignIn: () => void;
  onClose: (result: 'sent' | 'discarded' | 'saved' | 'closed', info?: string) => void;
}) {
  const [d, setD] = useState<DraftBody>(props.initial);
  const [rich, setRich] = useState(props.initial.html !== null);
  // a reply to all (or a reopened draft) fills Cc: shown, so that the user sees who gets it
  const [showBcc, setShowBcc] = useState(!!props.initial.cc || !!props.initial.bcc);
  const [files, setFiles] = useState<FileItem[]>(() =>
    props.initial.attachments.map((ref, i) => ({
      key: `i${i}`,
      name: props.initialFiles[i]?.name ?? 'attachment',
      size: props.initialFiles[i]?.size ?? 0,
      ref,
      progress: 1,
      error: null,
    })),
  );
  const [status, setStatus] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const editor = useRef<HTMLDivElement>(null);
  const dirty = useRef(false);
  /**
   * The saves, one after the other: each replaces the draft the one before it saved, so one
   * that started before the one before it ended would leave that draft behind. Sending and
   * discarding wait for the last of them, and none starts meanwhile (`leaving`): a save
   * after them would leave a draft of a message sent or thrown away.
   */
  const saves = useRef<Promise<boolean>>(Promise.resolve(true));
  const leaving = useRef(false);
  /** Set by Discard: an upload that still ends after it is removed again, not kept for a draft that is gone. */
  const discarded = useRef(false);
  /** Why the last save failed, for the Close that cannot keep the draft. */
  const saveError = useRef('');
  const draftUid = useRef<number | null>(props.initial.draftUid);
  const latest = useRef({ d, files, rich });
  latest.current = { d, files, rich };
  const to = useRef<HTMLInputElement>(null);
  const signedOut = useRef(props.signedOut);
  signedOut.current = props.signedOut;

  useEffect(() => {
    if (rich && editor.current && !editor.current.innerHTML)
      editor.current.innerHTML = d.html ?? textToHtml(d.text);
    // a reply starts above the quote; a new message in To
    if (!d.to) to.current?.focus();
    else if (rich) editor.current?.focus();
    else document.getElementById('compose-text')?.focus();
  }, []);

  const used = files.reduce((n, f) => n + f.size, 0);

  /** The body the server gets: what is typed, and attachments that finished uploading. */
  const body = (): DraftBody => {
    const { d: cur, files: fs, rich: isRich } = latest.current;
    const html = isRich && editor.current ? editor.current.innerHTML : null;
    return {
      ...cur,
      html,
      text: isRich && editor.current ? htmlToPlain(editor.current) : cur.text,
      attachments: fs.filter((f) => f.ref).map((f) => f.ref!),
      draftUid: draftUid.current,
    };
  };

  /** The next save: a while after the last change, or after another window's save. */
  const timer = useRef<number | undefined>(undefined);
  /** Saves what is typed unless it is saved already; false when the draft could not be saved. */
  const saveNow = async (): Promise<boolean> => {
    if (!dirty.current) return true;
    dirty.current = false;
    try {
      setStatus('Saving…');
      const draft = body();
      const sent = latest.current.files.filter((f) => f.ref).map((f) => f.key);
      const res = await api.saveDraft(draft);
      draftUid.current = res.uid;
      // the attachments are parts of the new draft now; the draft they came from is gone
      if (res.attachments.length === sent.length)
        setFiles((fs) =>
          fs.map((f) => {
            const i = sent.indexOf(f.key);
            return i < 0 ? f : { ...f, ref: res.attachments[i]! };
          }),
        );
      setStatus(
        `Draft saved ${new Date().toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })}`,
      );
      return true;
    } catch (err) {
      dirty.current = true;
      // another window replaced or discarded this draft: the text stays here, and the next
      // save keeps it as a draft of its own
      if (err instanceof ApiError && err.code === 'draft_changed') {
        draftUid.current = null;
        setError(err.message);
      }
      // another window is saving this draft right now: the same draft, saved again shortly
      // (told draft_changed then if that save replaced it)
      if (err instanceof ApiError && err.code === 'draft_busy' && !leaving.current) {
        window.clearTimeout(timer.current);
        const after = typeof err.extra.retryAfter === 'number' ? err.extra.retryAfter * 1000 : SAVE_AFTER_MS;
        timer.current = window.setTimeout(() => void save(), after);
      }
      saveError.current = err instanceof ApiError ? err.message : 'the server cannot be reached';
      setStatus(err instanceof ApiError ? `Draft not saved: ${err.message}` : 'Draft not saved');
      return false;
    }
  };
  const save = (): Promise<boolean> => {
    const next = saves.current.then(saveNow);
    saves.current = next;
    return next;
  };

  // drafts saved while typing: a while after the last change (and not while signed out:
  // each save would only be refused)
  const changed = () => {
    dirty.current = true;
    window.clearTimeout(timer.current);
    if (!leaving.current && !signedOut.current)
      timer.current = window.setTimeout(() => void save(), SAVE_AFTER_MS);
  };
  useEffect(() => () => window.clearTimeout(timer.current), []);

  // logged in again (as the same account): what was not saved is saved now, and what was
  // not uploaded is uploaded
  const wasSignedOut = useRef(props.signedOut);
  useEffect(() => {
    const before = wasSignedOut.current;
    wasSignedOut.current = props.signedOut;
    if (props.signedOut) {
      window.clearTimeout(timer.current);
      setStatus('Not saved: your session has ended');
      return;
    }
    if (!before) return;
    setStatus('');
    if (dirty.current) void save();
    for (const f of latest.current.files) if (f.again) startUpload(f.key, f.again);
  }, [props.signedOut]);

  const set = (k: keyof DraftBody) => (e: Event) => {
    const v = (e.currentTarget as HTMLInputElement).value;
    setD((cur) => ({ ...cur, [k]: v }));
    changed();
  };

  const addFiles = (list: FileList | null) => {
    if (!list) return;
    let budget = props.attachmentLimit - used;
    for (const file of [...list]) {
      const key = `${Date.now()}-${Math.random()}`;
      if (file.size > budget) {
        setFiles((fs) => [
          ...fs,
          {
            key,
            name: file.name,
            size: 0,
            ref: null,
            progress: 0,
            error: `Too large: attachments may add up to ${formatSize(props.attachmentLimit)}`,
          },
        ]);
        continue;
      }
      budget -= file.size;
      setFiles((fs) => [
        ...fs,
        { key, name: file.name, size: file.size, ref: null, progress: 0, error: null },
      ]);
      startUpload(key, file);
    }
  };

  /** Uploads `file` as the attachment `key` (added, or refused before because the session ended). */
  const startUpload = (key: string, file: File) => {
    const up = upload(file, (sent, total) =>
      setFiles((fs) => fs.map((f) => (f.key === key ? { ...f, progress: total ? sent / total : 0 } : f))),
    );
    setFiles((fs) =>
      fs.map((f) =>
        f.key === key
          ? { key, name: file.name, size: file.size, ref: null, progress: 0, error: null, abort: up.abort }
          : f,
      ),
    );
    up.done.then(
      (res) => {
        if (discarded.current) {
          void api.deleteUpload(res.id).catch(() => undefined);
          return;
        }
        setFiles((fs) => fs.map((f) => (f.key === key ? { ...f, ref: { upload: res.id }, progress: 1 } : f)));
        changed();
      },
      (err: Error) => {
        const again = err instanceof ApiError && err.status === 401 ? { again: file } : {};
        const error = again.again
          ? 'Not uploaded yet: it is uploaded once you have logged in again'
          : err.message;
        setFiles((fs) => fs.map((f) => (f.key === key ? { ...f, error, size: 0, ...again } : f)));
      },
    );
  };

  const removeFile = (f: FileItem) => {
    f.abort?.();
    if (f.ref && 'upload' in f.ref) void api.deleteUpload(f.ref.upload).catch(() => undefined);
    setFiles((fs) => fs.filter((x) => x.key !== f.key));
    changed();
  };

  const send = async () => {
    if (signedOut.current) {
      props.onSignIn();
      return;
    }
    if (files.some((f) => !f.ref && (!f.error || f.again))) {
      setError('Wait for the attachments to finish uploading');
      return;
    }
    setSending(true);
    setError(null);
    window.clearTimeout(timer.current);
    leaving.current = true;
    await saves.current;
    try {
      const res = await api.send(body());
      props.onClose('sent', res.warnings.length ? res.warnings.join('. ') : undefined);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : 'Not sent');
      setSending(false);
      leaving.current = false;
      // what was typed while it was being sent
      if (dirty.current) changed();
    }
  };

  const discard = async () => {
    window.clearTimeout(timer.current);
    leaving.current = true;
    discarded.current = true;
    // uploads under way stop here: one that ended later would wait a day under the cap
    for (const f of latest.current.files) if (!f.ref) f.abort?.();
    await saves.current;
    if (draftUid.current) await api.deleteDraft(draftUid.current).catch(() => undefined);
    for (const f of latest.current.files)
      if (f.ref && 'upload' in f.ref) void api.deleteUpload(f.ref.upload).catch(() => undefined);
    props.onClose('discarded');
  };

  /** Closes, keeping the draft; a draft that cannot be saved keeps the editor open, so nothing typed is lost. */
  const close = async () => {
    window.clearTimeout(timer.current);
    if (!(await save())) {
      setError(
        `The draft could not be saved (${saveError.current}): correct it and close again, or discard it`,
      );
      return;
    }
    props.onClose(draftUid.current ? 'saved' : 'closed');
  };

  const toggleRich = () => {
    if (rich && editor.current) {
      const text = htmlToPlain(editor.current);
      setD((cur) => ({ ...cur, text, html: null }));
      setRich(false);
    } else {
      setD((cur) => ({ ...cur, html: textToHtml(cur.text) }));
      setRich(true);
      window.setTimeout(() => {
        if (editor.current) editor.current.innerHTML = textToHtml(latest.current.d.text);
      }, 0);
    }
    changed();
  };

  const cmd = (name: string, value?: string) => {
    editor.current?.focus();
    document.execCommand(name, false, value);
    changed();
  };

  return (
    <section
      class="compose"
      role="dialog"
      aria-modal="false"
      aria-labelledby="compose-title"
      onKeyDown={(e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          void send();
        } else if (e.key === 'Escape') {
          e.preventDefault();
          void close();
        }
      }}
    >
      <header class="compose-head">
        <h2 id="compose-title">{d.subject || 'New message'}</h2>
        <span class="compose-status" role="status" aria-live="polite">
          {status}
        </span>
        <button class="icon-button" onClick={() => void close()} aria-label="Close and keep the draft">
          ✕
        </button>
      </header>
      <form
        class="compose-form"
        onSubmit={(e) => {
          e.preventDefault();
          void send();
        }}
        onDragOver={(e) => {
          if (e.dataTransfer?.types.includes('Files')) e.preventDefault();
        }}
        onDrop={(e) => {
          if (!e.dataTransfer?.files.length) return;
          e.preventDefault();
          addFiles(e.dataTransfer.files);
        }}
      >
        <div class="field">
          <label for="compose-from">From</label>
          <select id="compose-from" value={d.from} onChange={set('from')}>
            {props.identities.map((a) => (
              <option key={a} value={a}>
                {a}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="compose-to">To</label>
          <input id="compose-to" ref={to} value={d.to} onInput={set('to')} autoComplete="off" multiple />
          {!showBcc && (
            <button type="button" class="link" onClick={() => setShowBcc(true)}>
              Cc/Bcc
            </button>
          )}
        </div>
        {showBcc && (
          <>
            <div class="field">
              <label for="compose-cc">Cc</label>
              <input id="compose-cc" value={d.cc} onInput={set('cc')} autoComplete="off" />
            </div>
            <div class="field">
              <label for="compose-bcc">Bcc</label>
              <input id="compose-bcc" value={d.bcc} onInput={set('bcc')} autoComplete="off" />
            </div>
          </>
        )}
        <div class="field">
          <label for="compose-subject">Subject</label>
          <input id="compose-subject" value={d.subject} onInput={set('subject')} />
        </div>
        <div class="editor-bar" role="toolbar" aria-label="Formatting">
          <button type="button" onClick={toggleRich} aria-pressed={rich}>
            {rich ? 'Rich text' : 'Plain text'}
          </button>
          {rich && (
            <>
              <button type="button" onClick={() => cmd('bold')} aria-label="Bold">
                <b>B</b>
              </button>
              <button type="button" onClick={() => cmd('italic')} aria-label="Italic">
                <i>I</i>
              </button>
              <button type="button" onClick={() => cmd('underline')} aria-label="Underline">
                <u>U</u>
              </button>
              <button type="button" onClick={() => cmd('insertUnorderedList')} aria-label="Bulleted list">
                •
              </button>
              <button type="button" onClick={() => cmd('insertOrderedList')} aria-label="Numbered list">
                1.
              </button>
              <button
                type="button"
                onClick={() => {
                  const url = window.prompt('Link to (https://…)');
                  if (url && /^(https?:|mailto:)/i.test(url)) cmd('createLink', url);
                }}
              >
                Link
              </button>
            </>
          )}
        </div>
        {rich ? (
          <div
            class="editor"
            ref={editor}
            contentEditable
            role="textbox"
            aria-multiline="true"
            aria-label="Message"
            onInput={changed}
          />
        ) : (
          <textarea
            id="compose-text"
            class="editor"
            aria-label="Message"
            value={d.text}
            onInput={set('text')}
          />
        )}
        <div class="attach">
          <label class="button">
            Attach files
            <input
              type="file"
              multiple
              class="sr-only"
              onChange={(e) => {
                addFiles(e.currentTarget.files);
                e.currentTarget.value = '';
              }}
            />
          </label>
          <span class="limit">
            {formatSize(used)} of {formatSize(props.attachmentLimit)} for attachments
          </span>
        </div>
        {files.length > 0 && (
          <ul class="files" aria-label="Attachments">
            {files.map((f) => (
              <li key={f.key} class={f.error ? 'failed' : ''}>
                <span class="file-name">{f.name}</span>
                {f.error ? (
                  <span class="error" role="alert">
                    {f.error}
                  </span>
                ) : f.ref ? (
                  <span class="file-size">{formatSize(f.size)}</span>
                ) : (
                  <progress max={1} value={f.progress} aria-label={`Uploading ${f.name}`} />
                )}
                <button
                  type="button"
                  class="icon-button"
                  onClick={() => removeFile(f)}
                  aria-label={`Remove ${f.name}`}
                >
                  ✕
                </button>
              </li>
            ))}
          </ul>
        )}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {props.signedOut && (
          <p class="error" role="alert">
            Your session has ended. What you wrote stays here, unsaved, until you log in again.{' '}
            <button type="button" class="link" onClick={props.onSignIn}>
              Log in again
            </button>
          </p>
        )}
        <div class="compose-actions">
          <button type="submit" class="primary" disabled={sending} title="Send (Ctrl+Enter)">
            {sending ? 'Sending…' : 'Send'}
          </button>
          <button type="button" onClick={() => void discard()}>
            Discard
          </button>
        </div>
      </form>
    </section>
  );
}
