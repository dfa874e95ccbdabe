/**
 * One structured logger (pino): JSON lines when stderr is not a TTY (machines, the swarm
 * script), short human lines on a TTY.
 */
import { pino, type Logger, type DestinationStream } from 'pino'

export type { Logger } from 'pino'

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'v'])

/** Formats pino's JSON lines as `12:00:01.234 INFO  msg key=value ...`. */
export function humanStream(out: NodeJS.WritableStream = process.stderr): DestinationStream {
  return {
    write(line: string): void {
      let rec: Record<string, unknown>
      try {
        rec = JSON.parse(line) as Record<string, unknown>
      } catch {
        out.write(line)
        return
      }
      const t = new Date(typeof rec.time === 'number' ? rec.time : Date.now()).toISOString().slice(11, 23)
      const lvl = (LEVELS[Number(rec.level)] ?? String(rec.level)).padEnd(5)
      const extras = Object.entries(rec)
        .filter(([k]) => !SKIP.has(k))
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ')
      out.write(`${t} ${lvl} ${String(rec.msg ?? '')}${extras ? ` ${extras}` : ''}\n`)
    },
  }
}

export interface LoggerOptions {
  level?: string
  /** Human lines instead of JSON; default: whether stderr is a TTY. */
  human?: boolean
  destination?: DestinationStream
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const human = options.human ?? process.stderr.isTTY === true
  const dest = options.destination ?? (human ? humanStream() : pino.destination({ fd: 2, sync: true }))
  return pino({ level: options.level ?? process.env.FLORA_LOG_LEVEL ?? 'info', base: undefined }, dest)
}

/** A logger that drops everything (library default when the app passes none and wants quiet). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
