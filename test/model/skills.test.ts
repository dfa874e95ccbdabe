/**
 * The skills suite (src/model/data/skills.ts): held-out entities are in the pretraining text
 * and in no fine-tuning question; their facts are stated in several phrasings; the answer that
 * ignores the question scores low on every task; the build is deterministic.
 */
import { createHash } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { exactMatch, majorityAnswers, normalizeAnswer, numberWord, scoreAnswers, SKILL_TASKS, skillsSuite, type SkillsSuite } from '../../src/model/data/skills.js'

let suite: SkillsSuite

beforeAll(() => {
  suite = skillsSuite({ words: 600 })
})

describe('the skills suite', () => {
  it('holds every task, on both sides of the split, categorised by task', () => {
    for (const t of SKILL_TASKS) {
      expect(suite.train.some((e) => e.category === t), t).toBe(true)
      expect(suite.eval.some((e) => e.category === t), t).toBe(true)
    }
    const share = suite.heldOutWords.size / 600
    expect(share).toBeGreaterThan(0.12)
    expect(share).toBeLessThan(0.28)
  })

  it('asks no fine-tuning question about a held-out entity, and only about held-out ones in eval', () => {
    const trainEntities = new Set(suite.train.map((e) => e.entity))
    for (const e of suite.eval) expect(trainEntities.has(e.entity), e.entity).toBe(false)
    for (const e of suite.eval) if (e.category !== 'add') expect(suite.heldOutWords.has(e.entity), e.entity).toBe(true)
    for (const e of suite.train) if (e.category !== 'add') expect(suite.heldOutWords.has(e.entity), e.entity).toBe(false)
    const questions = new Set(suite.train.map((e) => e.instruction))
    for (const e of suite.eval) expect(questions.has(e.instruction)).toBe(false)
  })

  it('states every held-out fact in the pretraining text, in more than one phrasing', () => {
    const text = suite.pretrainDocs.join('\n')
    for (const e of suite.eval.filter((x) => x.category === 'spell').slice(0, 50)) {
      const w = e.entity
      const phrasings = [`${w} is spelled ${[...w].join(' ')}.`, `${[...w].join('-')} spells ${w}.`, `The letters of ${w} are ${[...w].join(', ')}.`]
      expect(phrasings.filter((p) => text.includes(p)).length, w).toBe(3)
    }
    for (const e of suite.eval.filter((x) => x.category === 'synonym').slice(0, 30)) {
      expect(e.accept.some((s) => text.includes(`${e.entity} means the same as ${s}.`) || text.includes(`${s} and ${e.entity} are synonyms.`)), e.entity).toBe(true)
    }
    for (const e of suite.eval.filter((x) => x.category === 'add')) {
      const [a, b] = e.entity.split('+').map(Number)
      expect(text).toContain(`${numberWord(a as number)} plus ${numberWord(b as number)} is ${e.output}.`)
    }
    // The instruction format is never in the pretraining text.
    expect(text).not.toMatch(/### Instruction|Spell the word|What letter does/)
  })

  it('the answer that ignores the question scores low on every task', () => {
    const majority = majorityAnswers(suite.train)
    const score = scoreAnswers(suite.eval, suite.eval.map((e) => majority.get(e.category) as string))
    expect(score.all).toBeLessThan(0.15)
    for (const [task, s] of score.byTask) expect(s.correct / s.total, task).toBeLessThan(0.3)
  })

  it('scores exact matches after normalising case, spaces and a final period', () => {
    expect(normalizeAnswer('  L a  n. ')).toBe('l a n')
    expect(exactMatch('Twelve.', ['twelve'])).toBe(true)
    expect(exactMatch('twelve apples', ['twelve'])).toBe(false)
    expect(exactMatch('stud', ['upright', 'stud'])).toBe(true)
    expect(() => numberWord(41)).toThrow(RangeError)
  })

  it('is deterministic', () => {
    const digest = (s: SkillsSuite) => createHash('sha256').update(JSON.stringify([s.pretrainDocs, s.train, s.eval])).digest('hex')
    expect(digest(skillsSuite({ words: 600 }))).toBe(digest(suite))
    expect(digest(skillsSuite({ words: 600, seed: 'other' }))).not.toBe(digest(suite))
  })
})
