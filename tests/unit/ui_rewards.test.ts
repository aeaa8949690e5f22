import { describe, expect, it } from 'vitest';
import { BUILTIN_REWARDS } from '../../src/engine/train/rewards.ts';
import {
  BUILTIN_OPTIONS,
  draftProblems,
  draftScripts,
  draftsToRecipe,
  exampleCode,
  newBuiltinDraft,
  newScriptDraft,
  parseDrafts,
  readDrafts,
  recipeToDrafts,
  writeDrafts,
  type BuiltinDraft,
  type RewardDraft,
  type ScriptDraft,
} from '../../src/ui/recipe/rewards.ts';
import { missingRewardColumns } from '../../src/ui/data/report.ts';

const builtin = (name: BuiltinDraft['name'], options: Record<string, string> = {}, weight = '1'): BuiltinDraft => ({ kind: 'builtin', name, options, weight });
const script = (path: string, code = 'export default function f(p, c) { return c.map(() => 1); }', weight = '1'): ScriptDraft => ({ kind: 'script', path, code, weight });

describe('reward drafts to the recipe', () => {
  it('offers exactly the options each built-in takes', () => {
    for (const [name, reward] of Object.entries(BUILTIN_REWARDS)) {
      const keys = Object.keys((reward.options as unknown as { shape: Record<string, unknown> }).shape).sort();
      expect(BUILTIN_OPTIONS[name as BuiltinDraft['name']].map((o) => o.key).sort()).toEqual(keys);
    }
  });

  it('writes built-ins as objects with the options filled in, scripts as paths, and no weights when all are 1', () => {
    const drafts: RewardDraft[] = [
      builtin('accuracy', { column: '' }),
      builtin('format', { pattern: '^<answer>', flags: 'i' }),
      builtin('json', { schema: '{"type": "object"}' }),
      builtin('length', { target: ' 120 ' }),
      script(' rewards/a.js '),
    ];
    expect(draftsToRecipe(drafts)).toEqual({
      reward_funcs: [{ name: 'accuracy' }, { name: 'format', pattern: '^<answer>', flags: 'i' }, { name: 'json', schema: { type: 'object' } }, { name: 'length', target: 120 }, 'rewards/a.js'],
      reward_weights: null,
    });
  });

  it('writes every weight when one is not 1, an empty weight counting as 1', () => {
    expect(draftsToRecipe([builtin('json', {}, '2'), script('rewards/a.js', 'x', '')]).reward_weights).toEqual([2, 1]);
  });

  it('reads a recipe back into drafts, with the code of JavaScript rewards from the known files', () => {
    const funcs = [{ name: 'json', schema: { type: 'array' } }, 'rewards/a.js', 'rewards/unknown.js', { name: 'length', target: 50 }];
    const drafts = recipeToDrafts(funcs, [1, 0.5, 1, 3], { 'rewards/a.js': 'code of a' });
    expect(drafts).toEqual([
      builtin('json', { schema: JSON.stringify({ type: 'array' }, null, 2) }),
      script('rewards/a.js', 'code of a', '0.5'),
      script('rewards/unknown.js', '', '1'),
      builtin('length', { target: '50' }, '3'),
    ]);
    expect(draftsToRecipe(drafts)).toEqual({ reward_funcs: funcs, reward_weights: [1, 0.5, 1, 3] });
    expect(recipeToDrafts(undefined, null)).toEqual([]);
  });

  it('hands the Worker each JavaScript reward\'s code by path', () => {
    expect(draftScripts([builtin('json'), script('rewards/a.js', 'A'), script('rewards/b.js', 'B')])).toEqual({ 'rewards/a.js': 'A', 'rewards/b.js': 'B' });
  });
});

describe('reward draft problems', () => {
  it('says what only the editor can see, one sentence per draft', () => {
    const one = (d: RewardDraft) => draftProblems([d])[0];
    expect(one(builtin('length'))).toBe('The "length" reward needs its target.');
    expect(one(builtin('length', { target: 'long' }))).toBe('The target must be a number (got "long").');
    expect(one(builtin('json', { schema: '{"type": ' }))).toMatch(/^The schema is not valid JSON \(/);
    expect(one(builtin('json', {}, 'heavy'))).toBe('The weight must be a number (got "heavy").');
    expect(one(builtin('accuracy', { column: 'answer' }))).toBeNull();
    expect(one(script(''))).toBe('Give the file a name, such as rewards/my_reward.js.');
    expect(one(script('rewards/a.py'))).toMatch(/^Name the file with a \.js ending \(got "rewards\/a\.py"\)/);
    expect(one(script('rewards/b.js', '  '))).toBe('rewards/b.js has no code yet: a recipe names the file but does not hold it, so paste its code here.');
    expect(draftProblems([script('rewards/c.js'), script('rewards/c.js')])).toEqual([null, 'Another reward is already the file rewards/c.js; give this one its own name.']);
  });

  it('refuses one built-in twice, whose values would share a name in the logs', () => {
    expect(draftProblems([builtin('format'), builtin('format', { pattern: 'x' })])).toEqual([null, 'The built-in "format" is already in the list; its values would share one name in the logs, so keep one.']);
  });
});

describe('new rewards', () => {
  it('starts a JavaScript reward from a working example in TRL\'s shape, under a free name', () => {
    const first = newScriptDraft([]);
    expect(first.path).toBe('rewards/mentions_cat.js');
    expect(first.code).toContain('export default function mentions_cat(prompts, completions, columns) {');
    expect(first.code).toContain("return completions.map((c) => (c.includes('cat') ? 1 : 0));");
    const fn = new Function(`${first.code.replace('export default ', '')}\nreturn mentions_cat;`)() as (p: string[], c: string[], cols: object) => number[];
    expect(fn(['a', 'b'], ['a cat sat', 'a dog'], {})).toEqual([1, 0]);
    const second = newScriptDraft([first]);
    expect(second.path).toBe('rewards/mentions_cat_2.js');
    expect(second.code).toBe(exampleCode('mentions_cat_2'));
    expect(draftProblems([first, second])).toEqual([null, null]);
  });

  it('starts a built-in from the first one not in the list yet', () => {
    expect(newBuiltinDraft([]).name).toBe('accuracy');
    expect(newBuiltinDraft([builtin('accuracy'), builtin('format')]).name).toBe('json');
  });
});

describe('drafts in the form', () => {
  it('round-trip through the form value and refuse anything else', () => {
    const drafts = [builtin('format', { pattern: 'a' }, '2'), script('rewards/a.js')];
    expect(parseDrafts(writeDrafts(drafts))).toEqual(drafts);
    expect(parseDrafts('[{"kind": "builtin", "name": "nope", "options": {}, "weight": "1"}]')).toBeNull();
    expect(parseDrafts('[{"kind": "builtin", "name": "json", "options": {"schema": {}}, "weight": "1"}]')).toBeNull();
    expect(parseDrafts('not json')).toBeNull();
    expect(parseDrafts(true)).toBeNull();
    expect(readDrafts('{}')).toEqual([]);
  });
});

describe('rewards against the dataset\'s columns', () => {
  it('warns where the accuracy reward has no answer column to read', () => {
    expect(missingRewardColumns([builtin('accuracy')], ['answer'])).toEqual([]);
    expect(missingRewardColumns([builtin('accuracy')], ['solution'])).toEqual([]);
    expect(missingRewardColumns([builtin('accuracy')], ['label'])[0]).toMatch(/^The accuracy reward reads the "answer" column \(else "solution"\), which no row has/);
    expect(missingRewardColumns([builtin('accuracy', { column: 'gold' })], ['answer'])[0]).toMatch(/^The accuracy reward reads the "gold" column, which no row has/);
    expect(missingRewardColumns([builtin('format'), script('rewards/a.js')], [])).toEqual([]);
  });
});
