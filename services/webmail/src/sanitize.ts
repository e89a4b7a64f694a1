// HTML mail as the reader sees it: sanitised on the server (sanitize-html, an allow list
// of tags, attributes and URL schemes), remote content blocked until allowed, tracking
// pixels removed, click-tracking redirects replaced by where they lead. The result is
// shown in a sandboxed iframe (no scripts, no same origin) under its own strict CSP
// (see bodyDocument), so even what slipped through could not run or load anything.
import sanitizeHtml from 'sanitize-html';

export interface SanitizeOptions {
  /** Load remote images and styles (the user allowed it for this message or sender). */
  allowRemote: boolean;
  /** Content-ID (without <>) -> data: URI of an inline part. */
  inline?: Map<string, string>;
}

export interface SanitizedHtml {
  html: string;
  /** Remote images, backgrounds and style sheets not loaded. */
  blocked: number;
  /** Tracking pixels removed (also when remote content is allowed). */
  trackers: number;
  /** Links whose tracking redirect was replaced by the real destination. */
  unwrapped: number;
}

const TAGS = [
  'a', 'abbr', 'address', 'article', 'aside', 'b', 'bdi', 'bdo', 'big', 'blockquote', 'br', 'caption',
  'center', 'cite', 'code', 'col', 'colgroup', 'dd', 'del', 'details', 'dfn', 'div', 'dl', 'dt', 'em',
  'figcaption', 'figure', 'font', 'footer', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'header', 'hr', 'i', 'img',
  'ins', 'kbd', 'li', 'main', 'mark', 'nav', 'ol', 'p', 'pre', 'q', 's', 'samp', 'section', 'small', 'span',
  'strike', 'strong', 'style', 'sub', 'summary', 'sup', 'table', 'tbody', 'td', 'tfoot', 'th', 'thead',
  'time', 'tr', 'tt', 'u', 'ul', 'var', 'wbr',
]; // prettier-ignore

const LAYOUT = [
  'align', 'valign', 'width', 'height', 'bgcolor', 'color', 'dir', 'lang', 'title', 'border', 'cellpadding',
  'cellspacing', 'colspan', 'rowspan', 'style', 'class', 'id', 'role', 'aria-label', 'aria-hidden',
]; // prettier-ignore

/**
 * Open-tracking pixels of common mailing services and trackers, by URL (besides any image
 * of 1x1 or hidden, which is removed whatever its URL). A URL listed here is never loaded.
 */
const TRACKER_PATTERNS = [
  /\/track\/open/i,
  /\/wf\/open\b/i, // SendGrid
  /list-manage\.com\/track\//i, // Mailchimp
  /mandrillapp\.com\/track\//i,
  /\/e\/open\b|\/open\.php\b|\/open\.gif\b|\/o\.gif\b/i,
  /\/(pixel|beacon|tracking)[./?_-]/i,
  /(^|[./])(mailtrack\.io|mailstat\.us|mailfoogae\.appspot\.com|t\.sidekickopen\d*\.com|bl-1\.com|email\.mg\.|trk\.klclick\d?\.com|pixel\.watch|ad\.doubleclick\.net)/i,
  /google-analytics\.com\/collect/i,
  /\/e2t\/to\//i, // HubSpot
];

/** Query parameters click-tracking redirects keep the destination in. */
const REDIRECT_PARAMS = ['url', 'u', 'redirect', 'redirect_url', 'redirect_uri', 'r', 'target', 'dest', 'destination', 'link', 'l', 'q', 'goto', 'to']; // prettier-ignore

/** A URL that loads from elsewhere: `//host`, or http(s) with or without its slashes. */
const isRemote = (url: string) => /^\s*(https?:|[\\/]{2})/i.test(url);

/**
 * The absolute http(s) URL that a remote image's `https:host/x`, `https:/host/x` or
 * `https:\\host\x` names (WHATWG URL reads them all as https://host/x), or null for any
 * other. The image is written out with it: in the frame, whose own URL is the webmail's,
 * a browser would read a URL without slashes as a path on the webmail instead.
 */
function remoteUrl(url: string): string | null {
  if (!/^\s*https?:/i.test(url)) return null;
  try {
    const parsed = new URL(url.trim());
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

/** The destination a click-tracking redirect leads to, when the link says it; null otherwise. */
export function redirectTarget(href: string): string | null {
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  for (const name of REDIRECT_PARAMS) {
    const v = url.searchParams.get(name);
    if (!v) continue;
    for (const candidate of [v, safeDecode(v)]) {
      if (/^https?:\/\/[^\s/]+/i.test(candidate)) {
        try {
          const dest = new URL(candidate);
          if (dest.host !== url.host) return dest.toString();
        } catch {
          // not a URL after all
        }
      }
    }
  }
  return null;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A pixel-sized or hidden image, from its attributes or inline style. */
function looksInvisible(attribs: Record<string, string>): boolean {
  const tiny = (v: string | undefined) => v !== undefined && /^\s*[01](px)?\s*$/i.test(v);
  const style = (attribs.style ?? '').toLowerCase();
  const styleSize = (prop: string) => new RegExp(`(^|;)\\s*${prop}\\s*:\\s*[01](px)?\\s*(;|$)`).test(style);
  return (
    (tiny(attribs.width) && tiny(attribs.height)) ||
    (styleSize('width') && styleSize('height')) ||
    /(^|;)\s*display\s*:\s*none/.test(style) ||
    /(^|;)\s*visibility\s*:\s*hidden/.test(style)
  );
}

/**
 * A CSS escape (CSS Syntax 3 §4.3.7): a code point in up to six hex digits and one optional
 * white space, or a character. The hex run takes all the digits there are (up to six), so
 * that an escape cannot also be read as a shorter one and the digits after it.
 */
const CSS_ESCAPE = String.raw`\\(?:(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{1,5}(?![0-9a-fA-F]))(?:\r\n|[ \t\r\n\f])?|[^\r\n\f0-9a-fA-F])`;
/** An identifier's characters, escapes among them: the whole run, so that `myurl` is not `url`. */
const CSS_NAME = new RegExp(String.raw`(?:[\w\u0080-\uffff-]|${CSS_ESCAPE})+`, 'g');
/** The words cleanCss looks for: one written with escapes is written out plain first. */
const CSS_WORDS = new Set(['url', 'import', 'expression', 'behavior', '-moz-binding', 'javascript']);

// Strings, URLs and escapes are read by hand, one character at a time, as CSS Syntax 3 §4.3
// reads them: a regular expression for them has many ways to split a run of escapes, hex
// digits and white space, and tries them all when the text does not end as it expects (a
// url( left open): a style of a few hundred bytes would hold the process for hours.

/** CSS white space (§4.2); \r and \f are line breaks once the input is preprocessed (§3.3). */
const isNewline = (c: string | undefined) => c === '\n' || c === '\r' || c === '\f';
const isCssSpace = (c: string | undefined) => c === ' ' || c === '\t' || isNewline(c);
const isHexDigit = (c: string | undefined) => c !== undefined && /^[0-9a-fA-F]$/.test(c);
/** §4.2: a non-printable code point, which makes a URL a bad URL. */
const isNonPrintable = (c: string) => /^[\u0000-\u0008\u000b\u000e-\u001f\u007f]$/.test(c);

/** The index of the first non-white-space character at or after `at`. */
function skipCssSpace(css: string, at: number): number {
  let i = at;
  while (isCssSpace(css[i])) i++;
  return i;
}

/**
 * The escape whose backslash is just before `at` (§4.3.7): the text it stands for and
 * where it ends. A code point that cannot be one (zero, a surrogate, past U+10FFFF), or
 * none at the end, stands for U+FFFD.
 */
function readEscape(css: string, at: number): { value: string; end: number } {
  if (at >= css.length) return { value: '\ufffd', end: at };
  if (!isHexDigit(css[at])) {
    const value = String.fromCodePoint(css.codePointAt(at)!);
    return { value, end: at + value.length };
  }
  let end = at + 1;
  while (end < at + 6 && isHexDigit(css[end])) end++;
  const cp = parseInt(css.slice(at, end), 16);
  if (css.startsWith('\r\n', end)) end += 2;
  else if (isCssSpace(css[end])) end++;
  const valid = cp !== 0 && !(cp >= 0xd800 && cp <= 0xdfff) && cp <= 0x10ffff;
  return { value: valid ? String.fromCodePoint(cp) : '\ufffd', end };
}

/** The text CSS escapes in a name stand for (`u\72l`, `\75 rl` and `\000075rl` are all `url`). */
function decodeCssEscapes(text: string): string {
  let out = '';
  let i = 0;
  for (let slash = text.indexOf('\\'); slash >= 0; slash = text.indexOf('\\', i)) {
    const escape = readEscape(text, slash + 1);
    out += text.slice(i, slash) + escape.value;
    i = escape.end;
  }
  return out + text.slice(i);
}

/**
 * The CSS string whose quote is at `at` (§4.3.5): what it stands for (escapes read, an
 * escaped line break being no character), where it ends, and whether a line break cut it
 * (a bad string, which ends before the line break). One left open ends at the end.
 */
function readString(css: string, at: number): { value: string; end: number; bad: boolean } {
  const quote = css[at];
  let value = '';
  let i = at + 1;
  while (i < css.length) {
    const c = css[i]!;
    if (c === quote) return { value, end: i + 1, bad: false };
    if (isNewline(c)) return { value, end: i, bad: true };
    if (c !== '\\') {
      value += c;
      i++;
    } else if (css.startsWith('\r\n', i + 1)) i += 3;
    else if (isNewline(css[i + 1])) i += 2;
    else if (i + 1 === css.length) i++;
    else {
      const escape = readEscape(css, i + 1);
      value += escape.value;
      i = escape.end;
    }
  }
  return { value, end: i, bad: false };
}

/**
 * What follows `url(` at `at`, as a browser reads it: a lone string and the closing
 * parenthesis (§4.3.4: url( is then a function), or an unquoted URL (§4.3.6), up to `)` or
 * the end. `target` is the URL, or null for a bad URL (loads nothing), whose remnants run
 * to the first unescaped `)` (§4.3.14). Null for a string with more after it, which loads
 * nothing either: a function whose arguments follow.
 */
function readUrl(css: string, at: number): { end: number; target: string | null } | null {
  let i = skipCssSpace(css, at);
  if (css[i] === '"' || css[i] === "'") {
    const string = readString(css, i);
    const after = skipCssSpace(css, string.end);
    if (string.bad || (after < css.length && css[after] !== ')')) return null;
    return { end: Math.min(after + 1, css.length), target: string.value };
  }
  let target = '';
  for (;;) {
    const c = css[i];
    if (c === undefined) return { end: i, target };
    if (c === ')') return { end: i + 1, target };
    if (isCssSpace(c)) {
      i = skipCssSpace(css, i);
      if (i === css.length) return { end: i, target };
      if (css[i] === ')') return { end: i + 1, target };
      break;
    }
    if (c === '"' || c === "'" || c === '(' || isNonPrintable(c)) break;
    if (c === '\\') {
      if (isNewline(css[i + 1])) break;
      const escape = readEscape(css, i + 1);
      target += escape.value;
      i = escape.end;
    } else {
      target += c;
      i++;
    }
  }
  // a bad URL's remnants: an escaped `)` does not end them
  while (i < css.length && css[i] !== ')') i += css[i] === '\\' && !isNewline(css[i + 1]) ? 2 : 1;
  return { end: Math.min(i + 1, css.length), target: null };
}

/**
 * The functions whose string arguments are URLs to load, as url()'s: image-set() and its
 * prefixed form, image() (CSS Images 4 §2.2, §2.4), src() (CSS Values 4 §4.5).
 */
const URL_STRING_FUNCTIONS = new Set(['image-set', '-webkit-image-set', 'image', 'src']);

/**
 * The tokens besides strings that matter for what a sheet loads, in order: comments, a
 * name with the parenthesis that makes it a function; then runs of what starts none of
 * them, and one character at a time (the brackets around blocks among them). Each
 * alternative can only end one way, so a match never backtracks.
 */
const CSS_TOKEN = new RegExp(
  [
    String.raw`\/\*[\s\S]*?(?:\*\/|$)`,
    String.raw`(${CSS_NAME.source})(\()?`,
    String.raw`[^"'/\\\w\u0080-\uffff()[\]{}-]+`,
    String.raw`[\s\S]`,
  ].join('|'),
  'y',
);

/** `re` (sticky) matched at `at` in `text`. */
function matchAt(re: RegExp, text: string, at: number): RegExpExecArray | null {
  re.lastIndex = at;
  return re.exec(text);
}

/**
 * The sheet with every image it would load judged by `load`: the target of each url()
 * (quoted or not) and each string right inside image-set(), -webkit-image-set(), image()
 * or src(), read as a browser reads them (escapes, a string's line continuations). `load`
 * answers the target to keep, or null for none. A url() that loads nothing (a bad URL,
 * a string with more after it) goes whole.
 */
function rewriteLoads(css: string, load: (target: string) => string | null): string {
  let out = '';
  // the functions and blocks open here: whether a string right inside is an image, or
  // (a url() that loads nothing) whether what is inside goes
  const open: ('image' | 'other' | 'drop')[] = [];
  let drops = 0;
  for (let i = 0; i < css.length;) {
    const kept = drops === 0;
    if (css[i] === '"' || css[i] === "'") {
      const string = readString(css, i);
      const text = css.slice(i, string.end);
      i = string.end;
      if (open.at(-1) === 'image' && kept) {
        const target = load(string.value);
        out += target === null ? 'none' : `"${target}"`;
      } else if (kept) out += text;
      continue;
    }
    const [text, name, paren] = matchAt(CSS_TOKEN, css, i)!;
    i += text.length;
    const fn = paren ? decodeCssEscapes(name!).toLowerCase() : null;
    if (fn === 'url') {
      const url = readUrl(css, i);
      if (url) {
        i = url.end;
        if (!kept) continue;
        const target = url.target === null ? null : load(url.target);
        out += target === null ? 'none' : `url("${target}")`;
      } else {
        open.push('drop');
        drops++;
        if (kept) out += 'none';
      }
      continue;
    }
    if (fn !== null) open.push(URL_STRING_FUNCTIONS.has(fn) ? 'image' : 'other');
    else if (text === '(' || text === '[' || text === '{') open.push('other');
    else if (text === ')' || text === ']' || text === '}') {
      if (open.pop() === 'drop') {
        drops--;
        // a url() dropped ends at its parenthesis, unseen
        if (text === ')') continue;
      }
    }
    if (drops === 0) out += text;
  }
  return out;
}

/**
 * CSS (style attributes and <style> sheets) without anything that loads or runs: no
 * @import, no expression()/behavior/binding, and images (url(), strings in image-set())
 * only from data: or, when remote content is allowed, http(s). A browser reads escapes in
 * identifiers, URLs and strings as the characters they stand for, so the words looked for
 * are matched after them: only those words are rewritten unescaped, everything else (an
 * escaped selector, a string that is no image) stays as written.
 */
function cleanCss(css: string, allowRemote: boolean, count: { blocked: number }): string {
  const plain = css.replace(CSS_NAME, (name) => {
    if (!name.includes('\\')) return name;
    const word = decodeCssEscapes(name).toLowerCase();
    return CSS_WORDS.has(word) ? word : name;
  });
  const rest = plain
    .replace(/@import[^;]*;?/gi, () => {
      count.blocked++;
      return '';
    })
    .replace(/expression\s*\(|behavior\s*:|-moz-binding|javascript:/gi, '');
  return rewriteLoads(rest, (target) => {
    // an empty URL loads nothing
    if (!target.trim()) return null;
    const loads = /^data:image\//i.test(target) ? target : allowRemote ? remoteUrl(target) : null;
    // written out as a string that nothing in it can end or break
    if (loads !== null) return loads.replace(/["\\\u0000-\u001f\u007f]/g, '');
    count.blocked++;
    return null;
  });
}

/** The elements whose background attribute browsers draw (HTML §15.3.10, §15.3.9). */
const BACKGROUND_TAGS = new Set(['table', 'thead', 'tbody', 'tfoot', 'tr', 'td', 'th']);

/**
 * A background attribute as the CSS a browser takes it for, so that its image is judged
 * as any other in a style: blocked and counted until remote content is allowed, then
 * shown. Only an image of the message (data:) or from elsewhere; anything else loads
 * nothing and goes.
 */
function backgroundCss(tagName: string, value: string | undefined): string | null {
  const given = value?.trim() ?? '';
  if (!BACKGROUND_TAGS.has(tagName) || !(/^data:image\//i.test(given) || isRemote(given))) return null;
  // as a browser reads it (https:\\host\x is https://host/x), before it is written as a string
  const target = remoteUrl(given) ?? given;
  return `background-image:url("${target.replace(/["\\\u0000-\u001f\u007f]/g, '')}")`;
}

export function sanitizeMailHtml(html: string, opts: SanitizeOptions): SanitizedHtml {
  const count = { blocked: 0, trackers: 0, unwrapped: 0 };
  const out = sanitizeHtml(html, {
    allowedTags: TAGS,
    allowVulnerableTags: true, // <style>: its sheet is cleaned below, and the iframe's CSP forbids loads and scripts
    // (not head: mail puts its <style> there)
    nonTextTags: ['script', 'textarea', 'option', 'noscript', 'title', 'xmp', 'template'],
    allowedAttributes: {
      '*': LAYOUT,
      a: ['href', 'name', 'target', 'rel'],
      img: ['src', 'alt', 'width', 'height'],
      font: ['face', 'size', 'color'],
      ol: ['start', 'type'],
      td: ['nowrap'],
    },
    allowedSchemes: ['http', 'https', 'mailto', 'tel'],
    allowedSchemesByTag: { img: ['http', 'https', 'data'] },
    allowProtocolRelative: false,
    parseStyleAttributes: false,
    transformTags: {
      // runs after the tag's own transform below
      '*': (tagName, attribs) => {
        // before the element's own style, which wins over it as over any presentational hint
        const style = [backgroundCss(tagName, attribs.background), attribs.style].filter(Boolean).join(';');
        if (style) attribs.style = cleanCss(style, opts.allowRemote, count);
        return { tagName, attribs };
      },
      a: (tagName, attribs) => {
        const href = attribs.href ?? '';
        // a place in the message itself: followed in the frame (the document's <base>
        // opens every other link apart)
        if (href.trim().startsWith('#')) return { tagName, attribs: { ...attribs, target: '_self' } };
        const real = redirectTarget(href);
        if (real) {
          count.unwrapped++;
          attribs.href = real;
          attribs.title = `${real} (tracking redirect removed)`;
        } else if (/^(https?|mailto):/i.test(href) && !attribs.title) {
          // where a link goes, readable before it is followed
          attribs.title = href;
        }
        return { tagName, attribs: { ...attribs, target: '_blank', rel: 'noopener noreferrer' } };
      },
      img: (tagName, attribs) => {
        const src = (attribs.src ?? '').trim();
        const rest = { ...attribs };
        delete rest.src;
        const cid = /^cid:(.+)$/i.exec(src)?.[1];
        if (cid) {
          const data = opts.inline?.get(safeDecode(cid).replace(/^<|>$/g, ''));
          return { tagName, attribs: data ? { ...rest, src: data } : rest };
        }
        if (/^data:image\/(png|jpe?g|gif|webp|bmp);/i.test(src))
          return { tagName, attribs: { ...rest, src } };
        if (isRemote(src)) {
          const url = remoteUrl(src);
          if (looksInvisible(attribs) || TRACKER_PATTERNS.some((p) => p.test(url ?? src))) {
            count.trackers++;
            return { tagName: 'span', attribs: {} };
          }
          if (opts.allowRemote && url) return { tagName, attribs: { ...rest, src: url } };
          count.blocked++;
          return { tagName, attribs: { ...rest, alt: rest.alt || 'Remote image blocked' } };
        }
        return { tagName, attribs: rest };
      },
    },
    exclusiveFilter: (frame) =>
      frame.tag === 'span' && !frame.text.trim() && !Object.keys(frame.attribs).length,
  });
  // the text of <style> reaches the output as it was written: cleaned here
  // (a sheet with markup in it is not CSS but a parser trick: dropped whole)
  // (its attributes, kept by the layout list, go: a <style media=...> is cleaned too)
  const html2 = out.replace(/<style\b[^>]*>([\s\S]*?)<\/style>/gi, (_m, css: string) =>
    css.includes('<') ? '' : `<style>${cleanCss(css, opts.allowRemote, count)}</style>`,
  );
  return { html: html2, ...count };
}

/**
 * The iframe document's CSP: nothing but inline styles and images from the message
 * itself (data: URIs), remote images only when allowed; never scripts, frames, forms,
 * fonts from elsewhere or connections. Applies even if sanitising missed something.
 */
export function bodyCsp(allowRemote: boolean): string {
  return [
    "default-src 'none'",
    `img-src data:${allowRemote ? ' https: http:' : ''}`,
    "style-src 'unsafe-inline'",
    'font-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'self'",
    'sandbox allow-popups allow-popups-to-escape-sandbox',
  ].join('; ');
}

const BASE_STYLE =
  'html{color-scheme:light}body{margin:0;padding:12px 16px;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;background:#fff;overflow-wrap:anywhere}img{max-width:100%;height:auto}table{max-width:100%}pre{white-space:pre-wrap}pre.text{font:inherit}blockquote{margin:0 0 0 .5em;padding-left:.8em;border-left:3px solid #c8ccd4;color:#4a4f57}';

/** The whole iframe document around sanitised HTML. */
export function bodyDocument(sanitized: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><base target="_blank"><style>${BASE_STYLE}</style></head><body>${sanitized}</body></html>`;
}

/** What a user may put into a message with the rich-text editor. */
export function sanitizeComposeHtml(html: string): string {
  return sanitizeHtml(html, {
    allowedTags: ['p', 'br', 'div', 'span', 'b', 'strong', 'i', 'em', 'u', 's', 'ul', 'ol', 'li', 'a', 'blockquote', 'pre', 'code', 'h1', 'h2', 'h3'], // prettier-ignore
    allowedAttributes: { a: ['href'] },
    allowedSchemes: ['http', 'https', 'mailto'],
    allowProtocolRelative: false,
  });
}

/** Plain text from HTML, for the text/plain alternative and for quoting a reply. */
export function htmlToText(html: string): string {
  const text = sanitizeHtml(
    html
      .replace(/<(br|\/p|\/div|\/li|\/h[1-6]|\/tr|\/blockquote)\b[^>]*>/gi, '$&\n')
      .replace(/<li\b[^>]*>/gi, '$&- ')
      .replace(/<a\b[^>]*href="(https?:[^"]+)"[^>]*>([\s\S]*?)<\/a>/gi, (m, href: string, inner: string) =>
        inner.includes(href) ? m : `${m} &lt;${href}&gt;`,
      ),
    {
      allowedTags: [],
      allowedAttributes: {},
      nonTextTags: ['style', 'script', 'textarea', 'option', 'noscript', 'title', 'head'],
    },
  );
  return decodeEntities(text)
    .replace(/\u00a0/g, ' ')
    .replace(/[ \t\u00a0]+\n/g, '\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

function decodeEntities(s: string): string {
  return s
    .replace(/&nbsp;/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#(\d+);/g, (_m, n: string) => String.fromCodePoint(Number(n)))
    .replace(/&#x([0-9a-f]+);/gi, (_m, n: string) => String.fromCodePoint(parseInt(n, 16)))
    .replace(/&amp;/g, '&');
}

/** A plain-text message as the body document shows it: escaped, its http(s) links clickable. */
export function textToHtmlBody(text: string): string {
  const esc = (t: string) => t.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const url = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;
  let out = '';
  let last = 0;
  for (const m of text.matchAll(url)) {
    out +=
      esc(text.slice(last, m.index)) +
      `<a href="${esc(m[0])}" target="_blank" rel="noopener noreferrer">${esc(m[0])}</a>`;
    last = m.index + m[0].length;
  }
  return `<pre class="text">${out + esc(text.slice(last))}</pre>`;
}
