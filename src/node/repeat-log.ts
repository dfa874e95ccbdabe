/**
 * Log lines that repeat (a peer flooding rejected messages) are written once, then counted:
 * the first occurrence of a key is logged at once; further ones within `windowMs` are
 * counted and summarized in one line ("... (repeated N times in the last 10 s)") when the
 * window closes. Keeps a hostile peer from turning the log into its amplifier.
 */
export class RepeatLog {
  readonly #windowMs: number
  readonly #open = new Map<string, { count: number; write: (repeats: number) => void }>()
  #timer: NodeJS.Timeout | undefined

  constructor(windowMs = 10_000) {
    this.#windowMs = windowMs
  }

  /**
   * `write(0)` is called now for a new key; for a key seen within the window, the line is
   * counted and `write(n)` is called once when the window closes (n >= 1 repeats).
   */
  note(key: string, write: (repeats: number) => void): void {
    const open = this.#open.get(key)
    if (open != null) {
      open.count++
      open.write = write
      return
    }
    write(0)
    if (this.#open.size >= 10_000) this.flush()
    this.#open.set(key, { count: 0, write })
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined
      this.flush()
    }, this.#windowMs).unref()
  }

  /** Writes the summaries of every open key and starts over. */
  flush(): void {
    if (this.#timer != null) clearTimeout(this.#timer)
    this.#timer = undefined
    const open = [...this.#open.values()]
    this.#open.clear()
    for (const o of open) if (o.count > 0) o.write(o.count)
  }
}
