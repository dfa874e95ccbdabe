/** The held-out questions `npm run swarm` answers with the base and the federated model at the end. */
import { copyFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { defaultModelDir } from '../../src/model/bundled.js'
import { saveCheckpoint } from '../../src/model/checkpoint.js'
import { llamaConfig } from '../../src/model/config.js'
import { randomLlamaWeights } from '../../src/model/llama.js'
import { SKILL_TASKS } from '../../src/model/data/skills.js'
import { hasSampleQuestions, sampleAnswers } from '../../scripts/swarm-samples.js'

const CONFIG = llamaConfig({ vocabSize: 4096, hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, maxPositionEmbeddings: 64, tieWordEmbeddings: true })

describe('swarm samples', () => {
  let dir = ''
  let a = ''
  let b = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'flora-samples-'))
    a = join(dir, 'a')
    b = join(dir, 'b')
    await saveCheckpoint(a, CONFIG, randomLlamaWeights(CONFIG, 'samples-a', 0.5))
    await saveCheckpoint(b, CONFIG, randomLlamaWeights(CONFIG, 'samples-b', 0.5))
    for (const d of [a, b]) await copyFile(join(defaultModelDir(), 'tokenizer.json'), join(d, 'tokenizer.json'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('one held-out skills question per task with its answer, answered by each model', async () => {
    const s = await sampleAnswers(a, b, 'skills')
    expect(s.map((x) => x.question)).toHaveLength(SKILL_TASKS.length)
    expect(s[0].question).toMatch(/^Spell the word [a-z]+\.$/)
    expect(s[0].reference).toMatch(/^([a-z] )+[a-z]$/)
    const same = await sampleAnswers(a, a, 'skills')
    expect(same.map((x) => x.federated)).toEqual(same.map((x) => x.base)) // greedy: the same model answers the same
    expect(s.some((x, i) => x.federated !== same[i].federated)).toBe(true) // another model answers otherwise
  }, 60_000)

  it('samples bundled data only: skills and WordNet, not a JSONL file', () => {
    expect(hasSampleQuestions('skills')).toBe(true)
    expect(hasSampleQuestions(undefined)).toBe(true)
    expect(hasSampleQuestions('wordnet')).toBe(true)
    expect(hasSampleQuestions('data/dolly.jsonl')).toBe(false)
  })
})
