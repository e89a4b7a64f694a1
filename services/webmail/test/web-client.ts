import { request } from 'node:https';
import { randomBytes } from 'node:crypto';
import { HOST, PASSWORD } from './webmail-harness.js';

export interface WebResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json: any;
}

/**
 * What a browser does over HTTPS, as a test client: verifies the certificate, keeps
 * cookies, sends the CSRF token it was given. Each client has an address of its own
 * (X-Forwarded-For through the trusted proxy setting), like a separate computer.
 */
export class WebClient {
  readonly cookies = new Map<string, string>();
  csrf = '';
  readonly ip: string;

  constructor(
    readonly port: number,
    private readonly ca: string,
    ip?: string,
  ) {
    this.ip = ip ?? `10.${randomBytes(1)[0]}.${randomBytes(1)[0]}.${1 + (randomBytes(1)[0]! % 250)}`;
  }

  async req(
    method: string,
    path: string,
    opts: { json?: unknown; body?: Buffer; headers?: Record<string, string>; csrf?: boolean } = {},
  ): Promise<WebResponse> {
    const headers: Record<string, string> = {
      'x-forwarded-for': this.ip,
      ...(this.cookies.size ? { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {}),
      ...(opts.csrf !== false && this.csrf && method !== 'GET' ? { 'x-csrf-token': this.csrf } : {}),
      ...(opts.json !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(opts.headers ?? {}),
    };
    const payload = opts.json !== undefined ? Buffer.from(JSON.stringify(opts.json)) : opts.body;
    if (payload) headers['content-length'] = String(payload.length);
    return new Promise((resolve, reject) => {
      const r = request(
        { host: '127.0.0.1', port: this.port, servername: HOST, ca: this.ca, method, path, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            for (const c of [res.headers['set-cookie'] ?? []].flat()) {
              const [pair] = c.split(';');
              const [name, ...rest] = pair!.split('=');
              const value = rest.join('=');
              if (/max-age=0|expires=Thu, 01 Jan 1970/i.test(c) || !value) this.cookies.delete(name!.trim());
              else this.cookies.set(name!.trim(), value);
            }
            const body = Buffer.concat(chunks);
            const text = body.toString('utf8');
            let json: unknown = null;
            if (/json/.test(String(res.headers['content-type']))) json = JSON.parse(text);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json });
          });
        },
      );
      r.on('error', reject);
      r.end(payload);
    });
  }

  get = (path: string) => this.req('GET', path);
  post = (path: string, json: unknown = {}) => this.req('POST', path, { json });

  /** The login form: fetch the token, then log in; returns the login response. */
  async login(username: string, password = PASSWORD): Promise<WebResponse> {
    const s = await this.get('/api/session');
    this.csrf = s.json.loginToken;
    const res = await this.post('/api/login', { username, password });
    if (res.status === 200) this.csrf = res.json.csrf;
    return res;
  }
}

/** Query string of a folder request. */
export const q = (params: Record<string, string | number | boolean>) =>
  '?' +
  new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)])).toString();

/** An open event stream: every event received so far, in order. */
export interface EventStream {
  events: { event: string; data: any }[];
  status: number;
  /** The server ended the stream. */
  ended: boolean;
  close(): void;
}

/** Opens GET /api/events as a browser's EventSource does, and collects what arrives. */
export function openEvents(c: WebClient, ca: string): Promise<EventStream> {
  return new Promise((resolve, reject) => {
    const r = request(
      {
        host: '127.0.0.1',
        port: c.port,
        servername: HOST,
        ca,
        path: '/api/events',
        headers: {
          accept: 'text/event-stream',
          'x-forwarded-for': c.ip,
          cookie: [...c.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
        },
      },
      (res) => {
        const stream: EventStream = {
          events: [],
          status: res.statusCode ?? 0,
          ended: false,
          close: () => r.destroy(),
        };
        res.on('end', () => (stream.ended = true));
        let buf = '';
        res.on('data', (d: Buffer) => {
          buf += d.toString('utf8');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1];
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (event) stream.events.push({ event, data: data ? JSON.parse(data) : null });
          }
        });
        res.on('error', () => undefined);
        resolve(stream);
      },
    );
    r.on('error', reject);
    r.end();
  });
}
