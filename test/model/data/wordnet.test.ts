import { describe, expect, it } from 'vitest'
import { buildPretrainText, pretrainEntries } from '../../../src/model/data/pretrain-text.js'
import {
  hashSplit,
  LEXNAMES,
  loadWordNet,
  normalizeDefinition,
  parseDataFile,
  parseGloss,
  splitWordNet,
  wordnetTask,
} from '../../../src/model/data/wordnet.js'
import { DataFormatError } from '../../../src/model/data/types.js'

describe('WordNet parsing', () => {
  const wn = loadWordNet()

  it('parses all four data files with the 45 lexicographer files', () => {
    expect(wn.synsets.length).toBeGreaterThan(117_000)
    expect(LEXNAMES).toHaveLength(45)
    expect(new Set(wn.synsets.map((s) => s.lexname)).size).toBe(45)
    expect(loadWordNet()).toBe(wn) // cached
  })

  it('reads the dog synset', () => {
    const dog = wn.byId.get('02086723-n')
    expect(dog).toBeDefined()
    expect(dog?.words).toEqual(['dog', 'domestic dog', 'Canis familiaris'])
    expect(dog?.lexname).toBe('noun.animal')
    expect(dog?.definition).toContain('domesticated')
    expect(dog?.definition).not.toContain('"')
    expect(dog?.examples).toEqual(['the dog barked all night'])
  })

  it('strips adjective markers and splits glosses at ; outside quotes', () => {
    const line = '00014377 00 s 02 abounding 0 galore(ip) 0 001 & 00013906 a 0000 | existing in abundance; "abounding confidence"; "whiskey galore"  '
    const [s] = parseDataFile(line + '\n', 'adj')
    expect(s).toMatchObject({ id: '00014377-s', pos: 'adj', lexname: 'adj.all', words: ['abounding', 'galore'], definition: 'existing in abundance' })
    expect(s.examples).toEqual(['abounding confidence', 'whiskey galore'])
    expect(parseGloss('a duty; "every right implies a responsibility; every opportunity, an obligation"- John D.Rockefeller Jr')).toEqual({
      definition: 'a duty',
      examples: ['every right implies a responsibility; every opportunity, an obligation'],
    })
    expect(parseGloss('act of assembling: "mobilization of the troops"')).toEqual({ definition: 'act of assembling', examples: ['mobilization of the troops'] })
    expect(() => parseDataFile('00001740 99 n 01 entity 0 000 | x\n', 'noun', 'data.noun')).toThrow(/data\.noun:1: .*lex_filenum/)
    expect(() => parseDataFile('00001740 03 n 01 entity 0 000 | x\n', 'verb', 'data.verb')).toThrow(DataFormatError)
  })
})

describe('held-out split', () => {
  const wn = loadWordNet()
  const split = splitWordNet(wn)

  it('is a fixed ~5% by hash of the synset id, disjoint from training', () => {
    expect(split.eval.length / wn.synsets.length).toBeGreaterThan(0.045)
    expect(split.eval.length / wn.synsets.length).toBeLessThan(0.055)
    expect(split.train.length + split.eval.length + split.excluded.length).toBe(wn.synsets.length)
    const evalIds = new Set(split.eval.map((s) => s.id))
    expect(split.train.some((s) => evalIds.has(s.id))).toBe(false)
    for (const s of split.eval.slice(0, 50)) expect(hashSplit(s.id)).toBe('eval')
    // Known values pin the rule itself, so a change to it cannot pass unnoticed.
    expect(split.eval.slice(0, 3).map((s) => s.id)).toMatchInlineSnapshot(`
      [
        "00029413-n",
        "00036612-n",
        "00049115-n",
      ]
    `)
  })

  it('keeps no training definition equal to an evaluation definition', () => {
    const evalDefs = new Set(split.eval.map((s) => normalizeDefinition(s.definition)))
    expect(split.train.some((s) => evalDefs.has(normalizeDefinition(s.definition)))).toBe(false)
    expect(split.excluded.length).toBeLessThan(1000)
  })

  it('task examples follow the split and respect the limits', () => {
    const task = wordnetTask({ pos: ['noun'], maxTrain: 300, maxEval: 50, maxDefinitionChars: 80 })
    expect(task.train).toHaveLength(300)
    expect(task.eval).toHaveLength(50)
    const evalIds = new Set(split.eval.map((s) => s.id))
    expect(task.train.every((e) => !evalIds.has(e.synsetId) && e.pos === 'noun' && e.output.length <= 80)).toBe(true)
    expect(task.eval.every((e) => evalIds.has(e.synsetId))).toBe(true)
    expect(task.categories.every((c) => c.startsWith('noun.'))).toBe(true)
    expect(task.categories.length).toBeGreaterThan(20) // a prefix mixes categories
    expect(task.train[0].instruction).toMatch(/^Define the word .+ \(noun\)\.$/)
    expect(wordnetTask({ pos: ['noun'], maxTrain: 300, maxEval: 50, maxDefinitionChars: 80 })).toEqual(task)
    expect(() => wordnetTask({ categories: ['noun.dragon'] })).toThrow(/unknown WordNet category/)
  })
})

describe('pretraining text', () => {
  it('is deterministic and contains no evaluation definition', () => {
    const wn = loadWordNet()
    const split = splitWordNet(wn)
    const entries = pretrainEntries()
    expect(entries).toHaveLength(split.train.length)
    const text = entries.join('\n') + '\n'
    expect(buildPretrainText()).toBe(text)
    expect(text).toContain('dog, domestic dog, Canis familiaris (noun): a member of the genus Canis')
    expect(pretrainEntries({ seed: 'other' })).not.toEqual(entries)

    const defs = new Set<string>()
    for (const line of text.split('\n')) {
      const m = /^.*? \((?:noun|verb|adjective|adverb)\): (.*)$/.exec(line)
      if (m !== null) defs.add(normalizeDefinition(m[1]))
    }
    expect(defs.size).toBeGreaterThan(100_000)
    for (const s of split.eval) expect(defs.has(normalizeDefinition(s.definition))).toBe(false)
  })
})
