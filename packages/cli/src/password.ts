import { DirectoryError, passwordWeakness } from '@mailyard/directory';
import type { CliInput, TextSink } from './context.js';
import { CliError, ExitCode, usageError } from './errors.js';

/** More than any password the directory accepts; stops a mistaken `< bigfile` early. */
const STDIN_LIMIT = 64 * 1024;

/**
 * Reads a password piped on stdin (`--password-stdin`, as `docker login`): the whole
 * input, minus one trailing line ending. A second line is refused rather than guessed at.
 */
export async function readPasswordFromStdin(input: CliInput): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of input) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > STDIN_LIMIT) throw new CliError('the password on standard input is too long');
    chunks.push(buf);
  }
  const text = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (/[\r\n]/.test(text)) throw new CliError('the password on standard input must be a single line');
  return text;
}

/**
 * Reads lines from a terminal in raw mode without echoing them. Keeps what follows
 * a line ending for the next question, so a pasted "pw<Enter>pw<Enter>" works.
 */
class HiddenLineReader {
  private buffer = '';
  private ended = false;
  private wake: (() => void) | null = null;
  private readonly onData = (chunk: Buffer | string) => {
    // Escape sequences (arrow keys, bracketed paste markers) are not password characters.
    this.buffer += String(chunk).replace(/\u001b\[[0-9;]*[~A-Za-z]/g, '');
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake?.();
  };

  constructor(
    private readonly input: CliInput,
    private readonly output: TextSink,
  ) {
    input.setRawMode?.(true);
    input.setEncoding('utf8');
    input.on('data', this.onData);
    input.on('end', this.onEnd);
    input.resume();
  }

  async ask(prompt: string): Promise<string> {
    this.output.write(prompt);
    let value = '';
    for (;;) {
      while (this.buffer.length) {
        const ch = String.fromCodePoint(this.buffer.codePointAt(0)!);
        this.buffer = this.buffer.slice(ch.length);
        switch (ch) {
          case '\r':
          case '\n':
          case '\u0004': // Ctrl-D ends the line, as in a cooked terminal
            this.output.write('\n');
            return value;
          case '\u0003': // Ctrl-C: raw mode turned off the terminal's SIGINT
            this.output.write('\n');
            throw new CliError('interrupted', ExitCode.interrupted);
          case '\u007f':
          case '\b':
            value = Array.from(value).slice(0, -1).join('');
            break;
          case '\u0015': // Ctrl-U erases the line
            value = '';
            break;
          default:
            if (ch >= ' ') value += ch;
        }
      }
      if (this.ended) {
        this.output.write('\n');
        throw new CliError('the terminal closed before a password was entered');
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }

  close(): void {
    this.input.off('data', this.onData);
    this.input.off('end', this.onEnd);
    this.input.setRawMode?.(false);
    this.input.pause();
  }
}

/**
 * Asks for a new password twice on the terminal, echoing nothing. The strength check
 * runs after the first entry so a weak password is refused before it is retyped.
 */
export async function promptNewPassword(input: CliInput, output: TextSink, address: string): Promise<string> {
  const reader = new HiddenLineReader(input, output);
  try {
    const password = await reader.ask(`Password for ${address}: `);
    const weak = passwordWeakness(password, address);
    if (weak) throw new DirectoryError('weak_password', weak);
    const again = await reader.ask('Retype the password: ');
    if (again !== password) throw new CliError('the two passwords do not match');
    return password;
  } finally {
    reader.close();
  }
}

export interface PasswordSource {
  /** `--password-stdin` was given. */
  fromStdin: boolean;
  /**
   * Runs the checks that do not need the password (address valid, domain local,
   * account present or absent) before the operator is asked to type one. Returns the
   * normalised address for the prompt.
   */
  beforePrompt(): Promise<string>;
}

/** The password for `user add` / `user passwd`: piped with --password-stdin, or prompted on a terminal. */
export async function obtainPassword(
  input: CliInput,
  prompts: TextSink,
  source: PasswordSource,
): Promise<string> {
  if (source.fromStdin) return readPasswordFromStdin(input);
  if (!input.isTTY || !input.setRawMode)
    throw usageError('no password given: pipe it with --password-stdin or run on a terminal to be prompted');
  const address = await source.beforePrompt();
  return promptNewPassword(input, prompts, address);
}
