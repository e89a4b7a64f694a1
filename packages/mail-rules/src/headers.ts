/** The header fields of a raw message, unfolded, names lower-cased, in order. */
export function headerFields(message: Buffer): { name: string; value: string }[] {
  let end = message.indexOf('\r\n\r\n');
  const lf = message.indexOf('\n\n');
  if (end === -1 || (lf !== -1 && lf < end)) end = lf;
  const head = message.subarray(0, end === -1 ? Math.min(message.length, 256 * 1024) : end).toString('utf8');
  const out: { name: string; value: string }[] = [];
  for (const field of head.split(/\r?\n(?![ \t])/)) {
    const colon = field.indexOf(':');
    if (colon <= 0) continue;
    out.push({
      name: field.slice(0, colon).trim().toLowerCase(),
      value: field
        .slice(colon + 1)
        .replace(/\r?\n[ \t]+/g, ' ')
        .trim(),
    });
  }
  return out;
}

/** The first value of a field, or null. */
export function fieldValue(fields: { name: string; value: string }[], name: string): string | null {
  return fields.find((f) => f.name === name)?.value ?? null;
}

/** Every addr-spec in address fields (display names and comments dropped), lower-cased. */
export function addressesIn(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    const plain = v.replace(/"(?:[^"\\]|\\.)*"/g, '').replace(/\((?:[^()\\]|\\.)*\)/g, '');
    for (const m of plain.matchAll(/[^\s<>,;:()"]+@[^\s<>,;:()"]+/g)) out.push(m[0].toLowerCase());
  }
  return out;
}
