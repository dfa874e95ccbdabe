/**
 * The layers' dependency rules, checked on the source: imports (static, type-only and
 * dynamic) form no cycle, and a layer imports only the layers below it (docs/DESIGN.md).
 */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) return sourceFiles(p)
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : []
  })
}

/** Every relative module a file imports, resolved to a source file. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+'(\.[^']+)'/g), ...text.matchAll(/\bimport\(\s*'(\.[^']+)'\s*\)/g)].map((m) => m[1])
  return specs.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')))
}

function graph(): Map<string, string[]> {
  const files = sourceFiles(SRC)
  const known = new Set(files)
  return new Map(files.map((f) => [f, importsOf(f).filter((i) => known.has(i))]))
}

/** One cycle as a list of files (relative to src/), or undefined. */
function findCycle(g: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (f: string): string[] | undefined => {
    state.set(f, 'open')
    stack.push(f)
    for (const next of g.get(f) ?? []) {
      if (state.get(next) === 'open') return [...stack.slice(stack.indexOf(next)), next].map((x) => path.relative(SRC, x))
      if (state.get(next) === undefined) {
        const found = visit(next)
        if (found !== undefined) return found
      }
    }
    stack.pop()
    state.set(f, 'done')
    return undefined
  }
  for (const f of [...g.keys()].sort()) {
    if (state.get(f) !== undefined) continue
    const found = visit(f)
    if (found !== undefined) return found
  }
  return undefined
}

/** Which src/ directories each may import (besides itself); '.': the files directly in src/ (CLI helpers, version; index.ts would be a cycle). */
const MAY_IMPORT: Record<string, readonly string[]> = {
  lora: [],
  aggregation: ['lora'],
  gossip: ['aggregation', 'lora'],
  model: ['aggregation', 'lora', '.'],
  node: ['gossip', 'model', 'aggregation', 'lora', '.'],
  eval: ['model', 'aggregation', 'lora', '.'],
}

function layerOf(file: string): string {
  const rel = path.relative(SRC, file).split(path.sep)
  return rel.length === 1 ? '.' : rel[0]
}

describe('source layering', () => {
  it('imports point down the layers only', () => {
    const wrong: string[] = []
    for (const [file, deps] of graph()) {
      const from = layerOf(file)
      const allowed = MAY_IMPORT[from]
      if (allowed === undefined) continue
      for (const d of deps) {
        const to = layerOf(d)
        if (to !== from && !allowed.includes(to)) wrong.push(`${path.relative(SRC, file)} -> ${path.relative(SRC, d)}`)
      }
    }
    expect(wrong).toEqual([])
  })

  it('has no import cycle (dynamic imports included)', () => {
    const g = graph()
    expect(g.size).toBeGreaterThan(50)
    expect(findCycle(g)).toBeUndefined()
  })

  it('finds a cycle when there is one (the checker itself)', () => {
    const g = new Map([
      ['/a.ts', ['/b.ts']],
      ['/b.ts', ['/c.ts']],
      ['/c.ts', ['/a.ts']],
    ])
    expect(findCycle(g)).toHaveLength(4)
  })
})
