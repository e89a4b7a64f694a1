// Small pieces every admin page uses: loading with an error, an action's outcome, copying.
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.ts';

export const errorText = (err: unknown) =>
  err instanceof ApiError ? err.message : 'Something went wrong; try again';

/**
 * Loads on mount (and when `deps` change); `reload` loads again. Only the last load's answer
 * is shown: an earlier one that comes back later (a slow page passed by a quicker click on
 * Next) would put its rows under the later page's pager.
 */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const last = useRef(0);
  const reload = useCallback(() => {
    const n = ++last.current;
    setError(null);
    return load().then(
      (d) => void (n === last.current && setData(d)),
      (e: unknown) => void (n === last.current && setError(errorText(e))),
    );
  }, deps);
  useEffect(() => void reload(), [reload]);
  return { data, error, reload };
}

/** Runs actions one at a time, keeping the last outcome: a sentence of success or the server's refusal. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string } | null>(null);
  const run = async (fn: () => Promise<string | void>) => {
    setBusy(true);
    setOutcome(null);
    try {
      const text = await fn();
      if (text) setOutcome({ ok: true, text });
      return true;
    } catch (e) {
      setOutcome({ ok: false, text: errorText(e) });
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { busy, outcome, run, clear: () => setOutcome(null) };
}

export function Outcome(props: { outcome: { ok: boolean; text: string } | null }) {
  const o = props.outcome;
  if (!o) return null;
  return o.ok ? (
    <p class="notice" role="status">
      {o.text}
    </p>
  ) : (
    <p class="error" role="alert">
      {o.text}
    </p>
  );
}

export function LoadError(props: { error: string | null }) {
  return props.error ? (
    <p class="error" role="alert">
      {props.error}
    </p>
  ) : null;
}

/** A value to paste somewhere else, with a button that copies it. */
export function Copyable(props: { value: string; label: string; children?: ComponentChildren }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(props.value);
      setDone(true);
      setTimeout(() => setDone(false), 1500);
    } catch {
      // no clipboard permission: the text stays selectable
    }
  };
  return (
    <span class="copyable">
      <code>{props.children ?? props.value}</code>
      <button type="button" class="copy" onClick={() => void copy()} aria-label={`Copy ${props.label}`}>
        {done ? 'Copied' : 'Copy'}
      </button>
    </span>
  );
}

export function Card(props: { id: string; title: string; children: ComponentChildren }) {
  return (
    <section class="card" aria-labelledby={props.id}>
      <h2 id={props.id}>{props.title}</h2>
      {props.children}
    </section>
  );
}

/**
 * A table of the console: its caption for screen readers, the column headers, and with
 * `action` a last column of buttons whose header only screen readers read.
 */
export function AdminTable(props: {
  caption: ComponentChildren;
  columns: string[];
  action?: string;
  children: ComponentChildren;
}) {
  return (
    <table class="admin-table">
      <caption class="sr-only">{props.caption}</caption>
      <thead>
        <tr>
          {props.columns.map((c) => (
            <th scope="col" key={c}>
              {c}
            </th>
          ))}
          {props.action && (
            <th scope="col">
              <span class="sr-only">{props.action}</span>
            </th>
          )}
        </tr>
      </thead>
      <tbody>{props.children}</tbody>
    </table>
  );
}

export const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : '—');
