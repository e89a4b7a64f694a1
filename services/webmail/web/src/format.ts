import type { Address, DraftBody, Message } from './api.ts';

export function formatDate(iso: string, now = new Date()): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const sameDay = d.toDateString() === now.toDateString();
  if (sameDay) return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (d.getFullYear() === now.getFullYear())
    return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short' });
  return d.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
}

export const fullDate = (iso: string) =>
  new Date(iso).toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'short' });

/**
 * A count with its noun agreeing: `1 message`, `2 messages`. The Node packages share
 * smtp-core's; the browser bundle takes no workspace package, so it keeps its own.
 */
export const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function formatSize(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  if (n >= 1024) return `${Math.round(n / 1024)} KB`;
  return `${n} B`;
}

export const displayName = (a: Address | null | undefined) => (a ? a.name || a.address : '');
export const formatAddress = (a: Address) => (a.name ? `${a.name} <${a.address}>` : a.address);
/** For an address field the server parses again: names quoted. */
export const addressList = (list: Address[]) =>
  list.map((a) => (a.name ? `"${a.name.replace(/["\\]/g, '')}" <${a.address}>` : a.address)).join(', ');

const prefixed = (prefix: string, subject: string) =>
  new RegExp(`^${prefix}:`, 'i').test(subject.trim()) ? subject.trim() : `${prefix}: ${subject.trim()}`;

export const quote = (text: string) =>
  text
    .replace(/\r\n/g, '\n')
    .trimEnd()
    .split('\n')
    .map((l) => (l.startsWith('>') ? `>${l}` : `> ${l}`))
    .join('\n');

export const emptyDraft = (from: string): DraftBody => ({
  from,
  fromName: '',
  to: '',
  cc: '',
  bcc: '',
  subject: '',
  text: '',
  html: null,
  attachments: [],
  inReplyTo: null,
  references: null,
  origin: null,
  draftUid: null,
});

/** Which of my addresses a message was sent to (the one to answer from), else the account's own. */
export function myAddress(m: Message, mine: string[], primary: string): string {
  const to = new Set([...m.to, ...m.cc, ...m.bcc].map((a) => a.address.toLowerCase()));
  return mine.find((a) => to.has(a.toLowerCase())) ?? primary;
}

/** Addresses once each (compared as mail servers compare them, whatever their case), none of `leave`. */
const distinct = (list: Address[], leave: (a: Address) => boolean): Address[] => {
  const seen = new Set<string>();
  return list.filter((a) => {
    const key = a.address.toLowerCase();
    if (seen.has(key) || leave(a)) return false;
    seen.add(key);
    return true;
  });
};

export function replyDraft(m: Message, all: boolean, mine: string[], primary: string): DraftBody {
  const own = new Set(mine.map((a) => a.toLowerCase()));
  const isOwn = (a: Address) => own.has(a.address.toLowerCase());
  // Reply-To, else From (an IMAP envelope gives From as Reply-To when there is none); a
  // message of one's own (in Sent) is answered to its recipients, from the address it
  // was sent from, as Gmail and Roundcube do
  const answerTo = m.replyTo.length ? m.replyTo : m.from;
  const ownMessage = answerTo.length > 0 && answerTo.every(isOwn) && m.to.length > 0;
  const target = ownMessage ? m.to : answerTo;
  const inTarget = new Set(target.map((t) => t.address.toLowerCase()));
  const others = all
    ? distinct(
        [...(ownMessage ? [] : m.to), ...m.cc],
        (a) => isOwn(a) || inTarget.has(a.address.toLowerCase()),
      )
    : [];
  const sentAs = ownMessage ? m.from.find(isOwn)?.address.toLowerCase() : undefined;
  const from = mine.find((a) => a.toLowerCase() === sentAs) ?? myAddress(m, mine, primary);
  return {
    ...emptyDraft(from),
    to: addressList(target),
    cc: addressList(others),
    subject: prefixed('Re', m.subject),
    text: `\n\nOn ${fullDate(m.date)}, ${displayName(m.from[0])} wrote:\n${quote(m.text)}\n`,
    inReplyTo: m.messageId,
    references: [m.references, m.messageId].filter(Boolean).join(' ') || null,
    origin: { folder: m.folder, uid: m.uid, kind: 'reply', uidValidity: m.uidValidity },
  };
}

export function forwardDraft(m: Message, mine: string[], primary: string): DraftBody {
  const header = [
    '---------- Forwarded message ----------',
    `From: ${m.from.map(formatAddress).join(', ')}`,
    `Date: ${fullDate(m.date)}`,
    `Subject: ${m.subject}`,
    `To: ${m.to.map(formatAddress).join(', ')}`,
    ...(m.cc.length ? [`Cc: ${m.cc.map(formatAddress).join(', ')}`] : []),
  ].join('\n');
  return {
    ...emptyDraft(myAddress(m, mine, primary)),
    subject: prefixed('Fwd', m.subject),
    text: `\n\n${header}\n\n${m.text.replace(/\r\n/g, '\n').trimEnd()}\n`,
    attachments: m.attachments
      .filter((a) => !a.inline)
      .map((a) => ({ folder: m.folder, uid: m.uid, part: a.part })),
    origin: { folder: m.folder, uid: m.uid, kind: 'forward', uidValidity: m.uidValidity },
  };
}

/** Folder names people read (the special-use ones by their role). */
export function folderLabel(f: { path: string; name: string; specialUse: string | null }): string {
  switch (f.specialUse) {
    case '\\Inbox':
      return 'Inbox';
    case '\\Drafts':
      return 'Drafts';
    case '\\Sent':
      return 'Sent';
    case '\\Archive':
      return 'Archive';
    case '\\Junk':
      return 'Junk';
    case '\\Trash':
      return 'Trash';
    default:
      return f.name;
  }
}

/** Plain text for a rich-text editor's first content. */
export function textToHtml(text: string): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return text
    .split('\n')
    .map((l) => (l ? `<div>${esc(l)}</div>` : '<div><br></div>'))
    .join('');
}

/** The text of the rich-text editor, for the text/plain part and for switching back. */
export function htmlToPlain(el: HTMLElement): string {
  return el.innerText.replace(/\u00a0/g, ' ').replace(/\n{3,}/g, '\n\n');
}
