// The HTML sanitiser on its own: what may stay, what goes, what is counted.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bodyCsp,
  htmlToText,
  redirectTarget,
  sanitizeComposeHtml,
  sanitizeMailHtml,
  textToHtmlBody,
} from '../src/sanitize.js';

const clean = (html: string, allowRemote = false, inline?: Map<string, string>) =>
  sanitizeMailHtml(html, { allowRemote, ...(inline ? { inline } : {}) });

test('scripts, handlers, forms, frames and dangerous URLs never survive', () => {
  const attacks = [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="  javascript:alert(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<iframe src="https://evil.example"></iframe>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<form action="https://evil.example"><input name=p><button>go</button></form>',
    '<svg><script>alert(1)</script></svg>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    '<base href="https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<div style="width: expression(alert(1))">x</div>',
    '<table background="javascript:alert(1)"><tr><td background="https://evil.example/&quot;);x:url(javascript:alert(1))">x</td></tr></table>',
    '<style>@import url(https://evil.example/x.css); body { behavior: url(x.htc) }</style>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<textarea></textarea><img src=x onerror=alert(1)></textarea>',
  ];
  for (const a of attacks) {
    const out = clean(a).html;
    assert.doesNotMatch(
      out,
      /<script|onerror|javascript:|<iframe|<object|<embed|<form|<input|<meta|<base|<link|expression\(|@import|evil\.example|<svg|behavior/i,
      `${a} -> ${out}`,
    );
  }
});

test('remote images, backgrounds and sheets are blocked and counted until allowed', () => {
  const html =
    '<img src="https://cdn.example/a.png" width="300" height="100" alt="A">' +
    '<table background="https://cdn.example/t.png"><tr><td style="background-image:url(\'https://cdn.example/b.png\')">x</td></tr></table>' +
    '<style>.x{background:url(https://cdn.example/c.png)}</style>' +
    '<img srcset="https://cdn.example/d.png 2x" src="data:image/png;base64,AAAA">';
  const blocked = clean(html);
  assert.equal(blocked.blocked, 4);
  assert.doesNotMatch(blocked.html, /cdn\.example/);
  assert.match(blocked.html, /alt="A"/);
  assert.match(blocked.html, /src="data:image\/png;base64,AAAA"/, 'data: images are part of the message');
  const allowed = clean(html, true);
  assert.equal(allowed.blocked, 0);
  assert.match(allowed.html, /src="https:\/\/cdn\.example\/a\.png"/);
  assert.match(allowed.html, /url\("https:\/\/cdn\.example\/c\.png"\)/);
  assert.match(
    allowed.html,
    /<table style="background-image:url\(&quot;https:\/\/cdn\.example\/t\.png&quot;\)"/,
  );
  assert.doesNotMatch(allowed.html, /srcset|background=/, 'srcset and background= are not kept either way');
});

test('a background attribute of a table or cell becomes a CSS background under the same rule', () => {
  const html =
    '<table background="https://cdn.example/t.png"><tr>' +
    '<td background="https:cdn.example/c.png" style="color:red">x</td>' +
    '<td background="https:\\\\cdn.example\\e.png">e</td>' +
    '<th background="data:image/png;base64,AAAA">y</th>' +
    '<td background="javascript:alert(1)">z</td>' +
    '<td background=\'x"); background: url("https://evil.example/e.png\'>w</td>' +
    '</tr></table><div background="https://cdn.example/d.png">not drawn by browsers</div>';
  const blocked = clean(html);
  assert.equal(blocked.blocked, 3, 'the banner offers to show them');
  assert.doesNotMatch(blocked.html, /cdn\.example|evil\.example|javascript/);
  assert.match(blocked.html, /<th style="background-image:url\(&quot;data:image\/png;base64,AAAA&quot;\)">/);
  const allowed = clean(html, true);
  assert.equal(allowed.blocked, 0);
  assert.match(
    allowed.html,
    /<table style="background-image:url\(&quot;https:\/\/cdn\.example\/t\.png&quot;\)">/,
  );
  assert.match(
    allowed.html,
    /<td style="background-image:url\(&quot;https:\/\/cdn\.example\/c\.png&quot;\);color:red">/,
  );
  assert.match(
    allowed.html,
    /<td style="background-image:url\(&quot;https:\/\/cdn\.example\/e\.png&quot;\)">/,
  );
  assert.doesNotMatch(allowed.html, /javascript|evil\.example|d\.png|background=/);
});

test('an image URL with no slashes after its scheme is a remote image, shown once allowed', () => {
  for (const src of [
    'https:cdn.example/x.png',
    'HTTPS:cdn.example/x.png',
    'https:/cdn.example/x.png',
    'https:\\\\cdn.example\\x.png',
  ]) {
    const blocked = clean(`<img src="${src}" alt="X">`);
    assert.equal(blocked.blocked, 1, src);
    assert.doesNotMatch(blocked.html, /cdn\.example/, src);
    // loaded where a browser would load it: from that host, never from the webmail's
    const allowed = clean(`<img src="${src}" alt="X">`, true);
    assert.equal(allowed.blocked, 0, src);
    assert.match(allowed.html, /<img alt="X" src="https:\/\/cdn\.example\/x\.png"/, src);
  }
  assert.equal(clean('<img src="https:t.example/x.gif" width="1" height="1">', true).trackers, 1);
});

test('a sheet with attributes and a url( left open are cleaned and counted too', { timeout: 5_000 }, () => {
  const html =
    '<style media="screen">.x{background:url(https://cdn.example/e.png)}</style>' +
    '<div style="background:url(https://cdn.example/f.png">x</div>';
  const out = clean(html);
  assert.equal(out.blocked, 2, out.html);
  assert.doesNotMatch(out.html, /cdn\.example/);
});

test('url(), @import and the rest are found however their names are escaped', { timeout: 5_000 }, () => {
  // each loads https://cdn.example/... in a browser, which reads CSS escapes first
  const values = [
    'u\\72l(https://cdn.example/1.png)',
    '\\75rl(https://cdn.example/2.png)',
    '\\75 rl("https://cdn.example/3.png")',
    '\\000075rl(https://cdn.example/4.png)',
    '\\55\\52\\4c(https://cdn.example/5.png)',
    'u\\rl(https://cdn.example/6.png)',
  ];
  const sheets = [...values.map((v) => `.a{background:${v}}`), '@\\69mport "https://cdn.example/7.css";'];
  const cases = [
    ...sheets.map((css) => ({ html: `<style>${css}</style>`, blocked: 1 })),
    ...values.map((v) => ({ html: `<div style='background:${v}'>x</div>`, blocked: 1 })),
    { html: `<style>${sheets.join('\n')}</style>`, blocked: sheets.length },
  ];
  for (const { html, blocked } of cases) {
    const out = clean(html);
    assert.equal(out.blocked, blocked, `${html} -> ${out.html}`);
    assert.doesNotMatch(out.html, /cdn\.example/, html);
  }
  // the URL's own escapes too: allowed, it is loaded as the browser would read it
  const allowed = clean('<div style="background:u\\72l(ht\\74ps://cdn.example/\\65.png)">x</div>', true);
  assert.equal(allowed.blocked, 0);
  assert.match(allowed.html, /url\(&quot;https:\/\/cdn\.example\/e\.png&quot;\)/);
  // anything else stays as written: an escaped selector, a string, a name that only ends in url
  const kept = '.a\\:b{content:"\\"u\\72l"}.myurl{x:y}';
  assert.equal(clean(`<style>${kept}</style>`).html, `<style>${kept}</style>`);
});

test('tracking pixels are removed even when remote content is allowed', () => {
  for (const pixel of [
    '<img src="https://t.example/x.gif" width="1" height="1">',
    '<img src="https://t.example/x.gif" width="0" height="0">',
    '<img src="https://t.example/x.gif" style="width:1px;height:1px">',
    '<img src="https://t.example/x.gif" style="display:none">',
    '<img src="https://u123.ct.sendgrid.net/wf/open?upn=abc">',
    '<img src="https://shop.us1.list-manage.com/track/open.php?u=1">',
    '<img src="https://mailtrack.io/trace/mail/abc.png">',
  ]) {
    const out = clean(pixel, true);
    assert.equal(out.trackers, 1, pixel);
    assert.doesNotMatch(out.html, /<img/, pixel);
  }
  assert.equal(clean('<img src="https://cdn.example/photo.jpg" width="640" height="480">', true).trackers, 0);
});

test('click-tracking redirects are replaced by their destination', () => {
  assert.equal(
    redirectTarget('https://click.example/r?url=https%3A%2F%2Fshop.example%2Fa%3Fb%3D1'),
    'https://shop.example/a?b=1',
  );
  assert.equal(
    redirectTarget('https://www.google.com/url?q=https://news.example/story&sa=D'),
    'https://news.example/story',
  );
  assert.equal(
    redirectTarget('https://click.example/r?u=https://click.example/other'),
    null,
    'same host: not a redirect out',
  );
  assert.equal(redirectTarget('https://shop.example/search?q=shoes'), null);
  assert.equal(redirectTarget('https://click.example/r?url=javascript:alert(1)'), null);
  const out = clean('<a href="https://click.example/r?url=https%3A%2F%2Fshop.example%2F">Shop</a>');
  assert.equal(out.unwrapped, 1);
  assert.match(out.html, /href="https:\/\/shop\.example\/"/);
  assert.match(out.html, /target="_blank"/);
  assert.match(out.html, /rel="noopener noreferrer"/);
  assert.match(out.html, /title="https:\/\/shop\.example\/ \(tracking redirect removed\)"/);
});

test('a link to a place in the message stays in the message; the others open apart', () => {
  const out = clean(
    '<p><a href="#part-2" target="_blank">To part 2</a></p><h2 id="part-2">Part 2</h2>' +
      '<a name="end"></a><a href="https://shop.example/">Shop</a><a href="mailto:a@example.org">Mail</a>',
  ).html;
  assert.match(out, /<a href="#part-2" target="_self">To part 2<\/a>/);
  assert.match(out, /<h2 id="part-2">/);
  assert.match(out, /<a href="https:\/\/shop\.example\/"[^>]* target="_blank" rel="noopener noreferrer">/);
  assert.match(out, /<a href="mailto:a@example\.org"[^>]* target="_blank"/);
});

test('inline images (cid:) become data: URIs; unknown ones lose their src', () => {
  const inline = new Map([['logo@x', 'data:image/png;base64,QUJD']]);
  const out = clean('<img src="cid:logo@x"><img src="cid:missing@x" alt="m">', false, inline);
  assert.match(out.html, /<img src="data:image\/png;base64,QUJD"/);
  assert.match(out.html, /<img alt="m"/);
  assert.equal(out.blocked, 0);
});

test('ordinary mail formatting stays', () => {
  const html =
    '<table width="600" cellpadding="4"><tr><td align="center" style="color:#333;font-size:14px">Hi <b>there</b></td></tr></table>' +
    '<ul><li>one</li></ul><blockquote>quoted</blockquote><a href="mailto:a@example.org">mail me</a>';
  const out = clean(html).html;
  for (const kept of [
    'width="600"',
    'align="center"',
    'style="color:#333;font-size:14px"',
    '<b>there</b>',
    '<li>one</li>',
    '<blockquote>',
    'href="mailto:a@example.org"',
  ])
    assert.ok(out.includes(kept), `${kept} in ${out}`);
});

test('the body CSP allows nothing to load or run but what was allowed', () => {
  const strict = bodyCsp(false);
  assert.match(strict, /default-src 'none'/);
  assert.match(strict, /img-src data:;/);
  assert.match(strict, /sandbox allow-popups/);
  assert.doesNotMatch(strict, /script|allow-scripts|allow-same-origin/);
  assert.match(bodyCsp(true), /img-src data: https: http:/);
});

test('compose HTML keeps simple formatting only; text comes out readable', () => {
  assert.equal(
    sanitizeComposeHtml(
      '<p style="color:red">Hi <b>Bob</b> <img src="https://t.example/x"><a href="javascript:x" onclick="y">z</a></p>',
    ),
    '<p>Hi <b>Bob</b> <a>z</a></p>',
  );
  assert.equal(
    htmlToText(
      '<p>Hello&nbsp;<b>Bob</b></p><ul><li>one</li><li>two</li></ul><a href="https://x.example/">site</a><style>p{}</style>',
    ),
    'Hello Bob\n- one\n- two\nsite <https://x.example/>',
  );
});

test('plain text is escaped, its links made clickable', () => {
  assert.equal(
    textToHtmlBody('See https://example.org/a?b=1&c=2. <b>not bold</b> "javascript:alert(1)"'),
    '<pre class="text">See <a href="https://example.org/a?b=1&#38;c=2" target="_blank" rel="noopener noreferrer">https://example.org/a?b=1&#38;c=2</a>. &#60;b&#62;not bold&#60;/b&#62; &#34;javascript:alert(1)&#34;</pre>',
  );
});

test(
  'a URL continued over lines, or a string in image-set(), is blocked and counted',
  { timeout: 5_000 },
  () => {
    // each loads https://cdn.example/N.png in a browser: a backslash before a line break in a
    // string is no character (CSS Syntax 3 §4.3.5), and image-set() takes strings for URLs
    const cases = [
      { html: '<style>.a{background:url("https://cdn.example/1\\\n.png")}</style>', blocked: 1 },
      { html: "<style>.a{background:url('https://cdn.example/2\\\r\n.png')}</style>", blocked: 1 },
      { html: '<div style=\'background:url("https://cdn.example/3\\\n.png")\'>x</div>', blocked: 1 },
      {
        html: '<div style="background:url(&quot;https://cdn.example/4\\&#10;.png&quot;)">x</div>',
        blocked: 1,
      },
      {
        html: '<style>.a{background:image-set("https://cdn.example/5.png" 1x, "https://cdn.example/6.png" 2x)}</style>',
        blocked: 2,
      },
      {
        html: '<div style="background:-webkit-image-set(\'https://cdn.example/7.png\' 1x)">x</div>',
        blocked: 1,
      },
      { html: '<style>.a{background:image("https://cdn.example/8.png", white)}</style>', blocked: 1 },
      {
        html: '<style>.a{background:im\\61ge-set(/**/"https://cdn.example/9\\\n.png" 1x)}</style>',
        blocked: 1,
      },
      { html: '<style>.a{background:src("https://cdn.example/10.png")}</style>', blocked: 1 },
    ];
    for (const { html, blocked } of cases) {
      const out = clean(html);
      assert.equal(out.blocked, blocked, `${html} -> ${out.html}`);
      assert.doesNotMatch(out.html, /cdn\.example/, html);
    }
    // allowed, each is loaded as the browser reads it
    const allowed = clean(
      '<style>.a{background:url("https://cdn.example/1\\\n.png")}' +
        '.b{background:image-set("https://cdn.example/\\\n5.png" 1x, url(https://cdn.example/6.png) 2x)}</style>',
      true,
    );
    assert.equal(allowed.blocked, 0, allowed.html);
    assert.equal(
      allowed.html,
      '<style>.a{background:url("https://cdn.example/1.png")}' +
        '.b{background:image-set("https://cdn.example/5.png" 1x, url("https://cdn.example/6.png") 2x)}</style>',
    );
    // what loads nothing is not counted: text that reads url(, an image type, a bad URL
    // (a line break in url() unquoted), a url() of a string and more; the last two go
    const quiet = clean(
      '<style>.a{content:"url(https://cdn.example/11.png)"}' +
        '.b{background:image-set(url(data:image/png;base64,AA) type("image/png") 1x)}' +
        '.c{background:url(https://cdn.example/12\\\n.png)}' +
        '.d{background:url("https://cdn.example/13.png" x)}.e{color:red}</style>',
    );
    assert.equal(quiet.blocked, 0, quiet.html);
    assert.equal(
      quiet.html,
      '<style>.a{content:"url(https://cdn.example/11.png)"}' +
        '.b{background:image-set(url("data:image/png;base64,AA") type("image/png") 1x)}' +
        '.c{background:none}.d{background:none}.e{color:red}</style>',
    );
  },
);

test(
  'a sheet built to make the cleaner backtrack is cleaned as quickly as any other',
  { timeout: 10_000 },
  () => {
    // each repeats a construct thousands of times where a pattern that can split it many ways
    // would try them all: escapes, escaped line breaks, quotes, comments, url( left open
    const n = 5_000;
    const cases = [
      // hex escapes then a quote: a bad URL, which loads nothing
      { css: `.a{background:url(${'\\aaaaaa'.repeat(n)}"x)}`, blocked: 0, out: '.a{background:none}' },
      { css: `.a{background:url(${'\\aaaaaa '.repeat(n)}x(`, blocked: 0, out: '.a{background:none' },
      // escapes each with its white space, in a URL that loads
      {
        css: `.a{background:url(https://cdn.example/${'\\61 '.repeat(n)})}`,
        blocked: 1,
        out: '.a{background:none}',
      },
      {
        css: `.a{background:url("https://cdn.example/${'\\\n'.repeat(n)}x.png")}`,
        blocked: 1,
        out: '.a{background:none}',
      },
      { css: `.a{background:url(${'a\\\n'.repeat(n)})}`, blocked: 0, out: '.a{background:none}' },
      {
        css: `.a{background:url(${'"a" '.repeat(n)})}.b{color:red}`,
        blocked: 0,
        out: '.a{background:none}.b{color:red}',
      },
      { css: `.a{background:url(${"'\\'".repeat(n)}`, blocked: 0, out: '.a{background:none' },
      { css: `.a{content:${'"\\"'.repeat(n)}}`, blocked: 0, out: `.a{content:${'"\\"'.repeat(n)}}` },
      {
        css: `.a{background:image-set(${'"https://cdn.example/x.png" 1x,'.repeat(n)})}`,
        blocked: n,
        out: `.a{background:image-set(${'none 1x,'.repeat(n)})}`,
      },
      {
        css: `.a{background:${'/**/'.repeat(n)}url(https://cdn.example/x.png)}`,
        blocked: 1,
        out: `.a{background:${'/**/'.repeat(n)}none}`,
      },
      { css: `.a{background:${'/*'.repeat(n)}`, blocked: 0, out: `.a{background:${'/*'.repeat(n)}` },
      { css: `.a{background:${'url('.repeat(n)}`, blocked: 0, out: '.a{background:none' },
      { css: `.a{background:url(${' '.repeat(10 * n)}x(}`, blocked: 0, out: '.a{background:none' },
      { css: `.a{background:${'url(a '.repeat(n)}`, blocked: 0, out: '.a{background:none' },
      {
        css: `.a{background:${'\\aaaaaa'.repeat(n)}(}`,
        blocked: 0,
        out: `.a{background:${'\\aaaaaa'.repeat(n)}(}`,
      },
    ];
    for (const { css, blocked, out } of cases) {
      const sheet = clean(`<style>${css}</style>`);
      assert.equal(sheet.blocked, blocked, css.slice(0, 60));
      assert.equal(sheet.html, `<style>${out}</style>`, css.slice(0, 60));
      const attribute = css.slice(3).replace(/}/g, '').replace(/&/g, '&amp;').replace(/"/g, '&quot;');
      const inline = clean(`<div style="${attribute}">x</div>`);
      assert.equal(inline.blocked, blocked, css.slice(0, 60));
      assert.doesNotMatch(inline.html, /cdn\.example/, css.slice(0, 60));
    }
    // allowed, the URL is read as a browser reads it, whatever its length
    const allowed = clean(
      `<style>.a{background:url(https://cdn.example/${'\\61 '.repeat(n)})}</style>`,
      true,
    );
    assert.equal(allowed.html, `<style>.a{background:url("https://cdn.example/${'a'.repeat(n)}")}</style>`);
  },
);
