import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { Redis } from 'ioredis';
import type { Header, Pack } from 'tar-stream';
import { Directory } from '@mailyard/directory';
import { UIDLIST, formatUidList, parseUidList, walkStore } from '@mailyard/mailstore';
import { PolicyKeys, PolicyRules } from '@mailyard/policy-rules';
import { OperationError } from './errors.js';

// A backup is one tar archive (gzip-compressed when written by `writeBackup`):
//
//   manifest.json   BackupManifest: what made it, when, and what it holds
//   redis.jsonl     one RedisRecord per line: every platform key, DUMP payload and expiry
//   maildir/...     the mail store as laid out under MAILDIR_ROOT (folders as directories)
//   end.json        BackupTotals: written last, so a truncated archive is known as one
//
// Renaming an entry or changing a record is a new BACKUP_VERSION: archives outlive code.

/** Imported at the first archive written or read: other `mailyard` commands do not load it. */
const tarStream = () => import('tar-stream');

export const BACKUP_FORMAT = 'mailyard-backup';
/** The archive format this code writes and reads. */
export const BACKUP_VERSION = 1;

export interface BackupManifest {
  format: typeof BACKUP_FORMAT;
  version: number;
  /** ISO 8601, when the copy started. */
  created: string;
  /** The host that made it. */
  host: string;
  redis: {
    /** REDIS_PREFIX of the platform backed up (keys are stored without it). */
    prefix: string;
    /** The Redis server's version: DUMP payloads restore into that version or a newer one. */
    server: string;
  };
  maildir: { root: string };
  /** The entries, in order. */
  contents: string[];
}

/** What a backup holds, counted as it was written; a restore reports the same. */
export interface BackupTotals {
  keys: number;
  accounts: number;
  folders: number;
  messages: number;
  bytes: number;
}

/** One Redis key: its name without the prefix, DUMP payload (base64), absolute expiry in ms (0: none). */
interface RedisRecord {
  key: string;
  dump: string;
  expireAt: number;
}

/**
 * Keys that describe running instances, not the platform's data: a restored copy would
 * name instances, locks and web sessions that do not exist where it is restored. The
 * delay queues the services declared (`outbound:deferred:queues`) are written by each
 * service at its start, into an empty platform too, and name queues of this broker.
 */
const RUNTIME_KEYS = [
  /^admin:account-deleting:/,
  /^outbound:deferred:queues$/,
  /^policy:engine-config$/,
  /^pop3:lock:/,
  /^outbound:slots?:/,
  /^outbound:slotwait:/,
  /^slots:/,
  /^webmail:sessions?:/,
  /^webmail:uploads?:/,
];
const isRuntimeKey = (key: string) => RUNTIME_KEYS.some((re) => re.test(key));

/** Where the platform keeps its data: the Redis client (with its key prefix) and the Maildir root. */
export interface PlatformData {
  redis: Redis;
  maildirRoot: string;
}

const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');

/** The platform's key names (without the prefix), runtime keys left out; at most `limit`. */
async function platformKeys(redis: Redis, limit = Infinity): Promise<string[]> {
  const prefix = redis.options.keyPrefix ?? '';
  const out = new Set<string>();
  let cursor = '0';
  do {
    // ioredis does not apply its key prefix to SCAN's pattern nor strip it from the answer
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${globEscape(prefix)}*`, 'COUNT', 1000);
    for (const full of batch) {
      const key = full.slice(prefix.length);
      if (!isRuntimeKey(key)) out.add(key);
    }
    cursor = next;
  } while (cursor !== '0' && out.size < limit);
  return [...out].sort();
}

/**
 * Every platform key, read in one MULTI/EXEC: Redis runs the transaction's DUMPs with
 * nothing in between, so the keys are of one moment (a key created after the SCAN that
 * listed them is left out, as if made after the backup).
 */
async function dumpRedis(redis: Redis): Promise<RedisRecord[]> {
  const keys = await platformKeys(redis);
  if (!keys.length) return [];
  const tx = redis.multi();
  for (const key of keys) tx.dumpBuffer(key).pttl(key);
  const replies = await tx.exec();
  if (!replies) throw new Error('the Redis transaction was discarded');
  const now = Date.now();
  const out: RedisRecord[] = [];
  keys.forEach((key, i) => {
    const [dumpErr, dump] = replies[2 * i]!;
    const [ttlErr, ttl] = replies[2 * i + 1]!;
    if (dumpErr) throw dumpErr;
    if (ttlErr) throw ttlErr;
    // gone between the SCAN and the transaction
    if (dump === null) return;
    const ms = Number(ttl);
    out.push({ key, dump: (dump as Buffer).toString('base64'), expireAt: ms > 0 ? now + ms : 0 });
  });
  return out;
}

async function redisServerVersion(redis: Redis): Promise<string> {
  const info = await redis.info('server');
  return /^redis_version:(\S+)/m.exec(info)?.[1] ?? 'unknown';
}

function addEntry(
  pack: Pack,
  header: Partial<Header> & Pick<Header, 'name'>,
  body: Buffer | Readable,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error | null) => (err ? reject(err) : resolve());
    if (Buffer.isBuffer(body)) {
      pack.entry(header, body, done);
      return;
    }
    const entry = pack.entry(header, done);
    body.on('error', (err) => {
      entry.destroy(err);
      reject(err);
    });
    body.pipe(entry);
  });
}

/**
 * Writes a backup of the running platform to `out` (gzip-compressed tar): the Redis keys
 * of one moment, then every Maildir folder copied under its lock (see walkStore), so no
 * half-made change is captured. Services go on running meanwhile. The archive holds
 * password hashes and DKIM private keys: `out` must be readable by administrators only.
 */
export async function writeBackup(data: PlatformData, out: Writable): Promise<BackupTotals> {
  const created = new Date().toISOString();
  const records = await dumpRedis(data.redis);
  const manifest: BackupManifest = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    created,
    host: hostname(),
    redis: { prefix: data.redis.options.keyPrefix ?? '', server: await redisServerVersion(data.redis) },
    maildir: { root: data.maildirRoot },
    contents: ['manifest.json', 'redis.jsonl', 'maildir/', 'end.json'],
  };
  const pack = (await tarStream()).pack();
  const written = pipeline(pack, createGzip(), out);
  // if the output fails, the entries below wait for nothing
  written.catch(() => pack.destroy());
  const mtime = new Date(created);
  const json = (name: string, value: unknown) =>
    addEntry(
      pack,
      { name, type: 'file', mode: 0o600, mtime },
      Buffer.from(JSON.stringify(value, null, 2) + '\n'),
    );
  try {
    await json('manifest.json', manifest);
    await addEntry(
      pack,
      { name: 'redis.jsonl', type: 'file', mode: 0o600, mtime },
      Buffer.from(records.map((r) => JSON.stringify(r) + '\n').join('')),
    );
    const stats = await walkStore(data.maildirRoot, async (item) => {
      if ('folder' in item) {
        await addEntry(
          pack,
          { name: `maildir/${item.folder}/`, type: 'directory', mode: 0o700, mtime },
          Buffer.alloc(0),
        );
        return;
      }
      const file = await item.open();
      if (!file) return;
      await addEntry(
        pack,
        {
          name: `maildir/${item.rel}`,
          type: 'file',
          size: file.size,
          mode: item.mode,
          mtime: new Date(item.mtimeMs),
        },
        file.stream,
      );
    });
    const totals: BackupTotals = { keys: records.length, ...stats };
    await json('end.json', totals);
    pack.finalize();
    await written;
    return totals;
  } catch (err) {
    pack.destroy();
    await written.catch(() => undefined);
    throw err;
  }
}

// ---- restore

/** Why an archive cannot be restored, in one sentence naming it. */
function unreadable(name: string, why: string): OperationError {
  return new OperationError('invalid', `${name} ${why}`);
}

/** A path inside the Maildir root: relative, `/`-separated, no empty, `.` or `..` component. */
function safeRel(rel: string): boolean {
  if (!rel || rel.startsWith('/') || rel.includes('\0') || rel.includes('\\')) return false;
  return rel.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
}

/** Where a file of the archive's `maildir/` goes, and the folder whose `tmp/` it is written through. */
function placeOf(rel: string): { folder: string } {
  const parts = rel.split('/');
  const parent = parts.slice(0, -1);
  const last = parent.at(-1);
  return { folder: (last === 'cur' || last === 'new' ? parent.slice(0, -1) : parent).join('/') };
}

type Entry = { name: string; type: string; mode: number; mtime: Date; stream: Readable };

/**
 * Reads the archive at `path` entry by entry (gzip-compressed or not). Anything wrong
 * with its structure (bad compressed data, a bad tar header, the end cut off) is one
 * OperationError naming the file.
 */
async function readArchive(path: string, label: string, onEntry: (e: Entry) => Promise<void>): Promise<void> {
  const fh = await fs.open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new OperationError('not_found', `${label} does not exist`);
    if (err.code === 'EISDIR') throw unreadable(label, 'is a directory, not a backup archive');
    throw new OperationError('invalid', `${label} cannot be read (${err.code ?? err.message})`);
  });
  const magic = Buffer.alloc(2);
  let bytesRead: number;
  try {
    ({ bytesRead } = await fh.read(magic, 0, 2, 0));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EISDIR') throw unreadable(label, 'is a directory, not a backup archive');
    throw new OperationError('invalid', `${label} cannot be read (${e.code ?? e.message})`);
  } finally {
    await fh.close();
  }
  const gz = bytesRead === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
  const extract = (await tarStream()).extract();
  const source = createReadStream(path);
  // piped by hand: stream.pipeline does not see a streamx stream finish
  const fail = (err: Error) => extract.destroy(err);
  source.on('error', fail);
  if (gz) {
    const gunzip = createGunzip();
    gunzip.on('error', fail);
    source.pipe(gunzip).pipe(extract as unknown as Writable);
  } else {
    source.pipe(extract as unknown as Writable);
  }
  let entries = 0;
  try {
    for await (const e of extract) {
      entries++;
      const h = e.header;
      await onEntry({
        name: h.name,
        type: h.type ?? 'file',
        mode: h.mode ?? 0o600,
        mtime: h.mtime ?? new Date(),
        stream: e as unknown as Readable,
      });
      // whatever the handler did not read is skipped
      e.resume();
    }
  } catch (err) {
    if (err instanceof OperationError) throw err;
    throw unreadable(label, `is not a readable backup (${shortReason(err)})`);
  } finally {
    source.destroy();
  }
  if (!entries) throw unreadable(label, 'is not a backup archive (it holds no entries)');
}

function shortReason(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split('\n')[0]!.replace(/\.$/, '');
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function parseRecords(path: string, text: string): RedisRecord[] {
  const out: RedisRecord[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line) continue;
    let r: Partial<RedisRecord> | null = null;
    try {
      r = JSON.parse(line) as Partial<RedisRecord>;
    } catch {
      r = null;
    }
    if (!r || typeof r.key !== 'string' || typeof r.dump !== 'string' || typeof r.expireAt !== 'number')
      throw unreadable(path, `is corrupt (line ${i + 1} of redis.jsonl is not a Redis key record)`);
    out.push(r as RedisRecord);
  }
  return out;
}

/** What a restore found in the archive before writing anything. */
interface Checked {
  manifest: BackupManifest;
  records: RedisRecord[];
  totals: BackupTotals;
}

/** Reads the whole archive and checks it; nothing is written. */
async function checkArchive(path: string, label = path): Promise<Checked> {
  let manifest: BackupManifest | null = null;
  let records: RedisRecord[] | null = null;
  let totals: BackupTotals | null = null;
  let first = true;
  await readArchive(path, label, async (e) => {
    if (first) {
      first = false;
      if (e.name !== 'manifest.json')
        throw unreadable(label, 'is not a Mailyard backup (it has no manifest)');
      let m: Partial<BackupManifest> | null = null;
      try {
        m = JSON.parse((await readAll(e.stream)).toString('utf8')) as Partial<BackupManifest>;
      } catch {
        m = null;
      }
      if (!m || m.format !== BACKUP_FORMAT)
        throw unreadable(label, 'is not a Mailyard backup (its manifest is not one)');
      if (m.version !== BACKUP_VERSION)
        throw unreadable(
          path,
          `is a backup of format version ${String(m.version)}; this mailyard reads version ${BACKUP_VERSION}`,
        );
      manifest = m as BackupManifest;
      return;
    }
    if (totals) throw unreadable(label, `is corrupt (${e.name} after end.json)`);
    if (e.name === 'redis.jsonl') {
      records = parseRecords(label, (await readAll(e.stream)).toString('utf8'));
    } else if (e.name === 'end.json') {
      try {
        totals = JSON.parse((await readAll(e.stream)).toString('utf8')) as BackupTotals;
      } catch {
        throw unreadable(label, 'is corrupt (end.json does not parse)');
      }
    } else if (e.name.startsWith('maildir/')) {
      const rel = e.name.slice('maildir/'.length).replace(/\/$/, '');
      if (!safeRel(rel) || (e.type !== 'file' && e.type !== 'directory'))
        throw unreadable(label, `is corrupt (it holds ${JSON.stringify(e.name)}, which is no Maildir file)`);
    } else {
      throw unreadable(label, `is corrupt (unknown entry ${JSON.stringify(e.name)})`);
    }
  });
  if (!records) throw unreadable(label, 'is corrupt (it has no Redis data)');
  if (!totals) throw unreadable(label, 'is incomplete (its end is missing: the backup was cut short)');
  const t = totals as BackupTotals;
  if ((records as RedisRecord[]).length !== t.keys)
    throw unreadable(
      label,
      `is corrupt (it names ${t.keys} Redis keys and holds ${(records as RedisRecord[]).length})`,
    );
  return { manifest: manifest!, records, totals: t };
}

/** Whether the platform holds data: a key under its prefix (runtime keys aside) or anything under the Maildir root. */
export async function platformHoldsData(data: PlatformData): Promise<string | null> {
  if ((await platformKeys(data.redis, 1)).length)
    return `Redis has keys under the prefix "${data.redis.options.keyPrefix ?? ''}"`;
  const entries = await fs.readdir(data.maildirRoot).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (entries.length) return `${data.maildirRoot} is not empty`;
  return null;
}

/**
 * Restores the backup at `path` into the platform: checks the whole archive first (a
 * corrupt, cut or foreign one changes nothing), refuses a platform that holds data
 * unless `force` (then keys and files of the same name are replaced, others kept), writes
 * the Maildirs (each file through its folder's `tmp/`, with its mtime, which is the
 * message's INTERNALDATE), then the Redis keys, and tells the running services to reload
 * the directory and the policy rules.
 */
export async function restoreBackup(
  data: PlatformData,
  path: string,
  opts: {
    force?: boolean;
    /** How errors name the archive (default: its path). */
    name?: string;
    /**
     * Give every folder a new UIDVALIDITY: for a backup older than what clients have seen,
     * whose UIDs the next deliveries would otherwise issue again (RFC 9051 §2.3.1.1).
     */
    newUidValidity?: boolean;
  } = {},
): Promise<BackupTotals & { manifest: BackupManifest }> {
  const label = opts.name ?? path;
  const { manifest, records, totals } = await checkArchive(path, label);
  if (!opts.force) {
    const held = await platformHoldsData(data);
    if (held)
      throw new OperationError(
        'duplicate',
        `the platform is not empty (${held}); restore into an empty one, or add --force to overwrite`,
      );
  }
  // this Redis must read the backup's DUMP payloads: found out before any file is written
  await probeRedis(data.redis, records, manifest);
  // the restored version must not repeat one the running services already have, or they
  // would see no change and keep the rules they hold
  const versionBefore = Number(await data.redis.get(PolicyKeys.version)) || 0;
  await fs.mkdir(data.maildirRoot, { recursive: true, mode: 0o700 });
  const made = new Set<string>();
  const folderDirs = async (folder: string) => {
    if (made.has(folder)) return;
    for (const d of ['cur', 'new', 'tmp'])
      await fs.mkdir(join(data.maildirRoot, folder, d), { recursive: true, mode: 0o700 });
    made.add(folder);
  };
  let n = 0;
  // with newUidValidity: above every value the folders had and the time now, one apart
  let validity = Math.floor(Date.now() / 1000);
  const issued = new Map<string, number>();
  await readArchive(path, label, async (e) => {
    if (!e.name.startsWith('maildir/')) return;
    const rel = e.name.slice('maildir/'.length).replace(/\/$/, '');
    if (e.type === 'directory') return folderDirs(rel);
    const { folder } = placeOf(rel);
    await folderDirs(folder);
    // written whole in tmp/ first: a reader never sees half a message or state file
    const tmp = join(data.maildirRoot, folder, 'tmp', `restore.${process.pid}.${n++}`);
    const fh = await fs.open(tmp, 'w', e.mode & 0o700 || 0o600);
    try {
      if (opts.newUidValidity && rel.split('/').pop() === UIDLIST) {
        const chunks: Buffer[] = [];
        for await (const chunk of e.stream) chunks.push(chunk as Buffer);
        const list = parseUidList(Buffer.concat(chunks).toString('utf8'));
        if (list) {
          list.validity = validity = Math.max(validity + 1, list.validity + 1);
          // the account's record of the last one issued (folder.ts), for folders made later
          const account = rel.split('/').slice(0, 2).join('/');
          issued.set(account, Math.max(issued.get(account) ?? 0, list.validity));
        }
        await fh.writeFile(list ? formatUidList(list) : Buffer.concat(chunks));
      } else {
        // not stream.pipeline: it does not see a streamx stream end
        for await (const chunk of e.stream) await fh.writeFile(chunk as Buffer);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.utimes(tmp, e.mtime, e.mtime);
    const target = join(data.maildirRoot, rel);
    await fs.mkdir(dirname(target), { recursive: true, mode: 0o700 });
    await fs.rename(tmp, target);
  });
  for (const [account, last] of issued) {
    const file = join(data.maildirRoot, account, 'mailyard-uidvalidity');
    const before = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim()) || 0;
    if (last > before) await fs.writeFile(file, `${last}\n`, { mode: 0o600 });
  }
  await restoreRedis(data.redis, records, manifest, !!opts.force);
  if ((Number(await data.redis.get(PolicyKeys.version)) || 0) <= versionBefore)
    await data.redis.set(PolicyKeys.version, String(versionBefore));
  // the services cache lookups and rules: tell them the data changed under them
  await new Directory(data.redis).announceChange();
  await new PolicyRules(data.redis, data.redis.options.keyPrefix ?? '').announceChange();
  return { ...totals, manifest };
}

/** Restores one record of the backup under a scratch key: this server refuses a newer Redis's payloads. */
async function probeRedis(redis: Redis, records: RedisRecord[], manifest: BackupManifest): Promise<void> {
  const r = records[0];
  if (!r) return;
  const scratch = `restore-probe:${process.pid}:${Date.now()}`;
  try {
    await redis.restore(scratch, 1000, Buffer.from(r.dump, 'base64'), 'REPLACE');
  } catch (err) {
    throw restoreError(err as Error, manifest);
  } finally {
    await redis.del(scratch).catch(() => undefined);
  }
}

/** What a refused RESTORE means, in one sentence. */
function restoreError(err: Error, manifest: BackupManifest): Error {
  if (/payload version or checksum/i.test(err.message))
    return new OperationError(
      'invalid',
      `the backup's Redis data comes from Redis ${manifest.redis.server}, newer than this server: restore into Redis ${manifest.redis.server} or later`,
    );
  if (/BUSYKEY/.test(err.message))
    return new OperationError(
      'duplicate',
      'a key of the backup was created meanwhile; add --force to overwrite it',
    );
  return err;
}

async function restoreRedis(
  redis: Redis,
  records: RedisRecord[],
  manifest: BackupManifest,
  replace: boolean,
): Promise<void> {
  const now = Date.now();
  for (let i = 0; i < records.length; i += 500) {
    const pipe = redis.pipeline();
    let queued = 0;
    for (const r of records.slice(i, i + 500)) {
      const ttl = r.expireAt ? r.expireAt - now : 0;
      // expired since the backup was made
      if (r.expireAt && ttl <= 0) continue;
      const payload = Buffer.from(r.dump, 'base64');
      if (replace) pipe.restore(r.key, ttl, payload, 'REPLACE');
      else pipe.restore(r.key, ttl, payload);
      queued++;
    }
    if (!queued) continue;
    const replies = (await pipe.exec()) ?? [];
    for (const [err] of replies) if (err) throw restoreError(err, manifest);
  }
}

/** For `restore`'s report of what it holds before writing (and for tests). */
export async function readBackupManifest(path: string): Promise<BackupManifest> {
  return (await checkArchive(path)).manifest;
}

/** Copies `input` into a file of mode 0600 (stdin, to be read twice by restoreBackup). */
export async function spoolToFile(input: Readable, path: string): Promise<void> {
  await pipeline(input, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
}
