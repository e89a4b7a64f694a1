/** One account's own allow and block lists (addresses, domains and parent domains). */
export interface UserLists {
  allow: ReadonlySet<string>;
  block: ReadonlySet<string>;
}

/**
 * The allow and block lists of the recipients an intake has seen, read whole on first
 * use (in the stage's one pipeline) and dropped on every announcement on the rules'
 * channel (`mailyard policy allow|block` announce theirs). A read that started before a
 * drop is not kept: its answer may be the old one.
 */
export class UserListCopy {
  private readonly lists = new Map<string, UserLists>();
  /** Bumped by every drop. */
  generation = 0;

  constructor(private readonly maxAccounts = 10_000) {}

  get(account: string): UserLists | undefined {
    return this.lists.get(account.toLowerCase());
  }

  /** Keeps `lists`, read since `generation`, unless they were dropped meanwhile. */
  set(account: string, lists: UserLists, generation: number): void {
    if (generation !== this.generation) return;
    if (this.lists.size >= this.maxAccounts) this.lists.clear();
    this.lists.set(account.toLowerCase(), lists);
  }

  clear(): void {
    this.generation++;
    this.lists.clear();
  }
}
