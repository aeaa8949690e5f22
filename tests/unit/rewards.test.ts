// GRPO's built-in reward functions and the check every reward's output goes through. Cases mirror
// TRL 1.9's tests/test_rewards.py where TRL has the same function.
import { describe, expect, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import {
  BUILTIN_REWARDS,
  THINK_ANSWER_FORMAT_PATTERN,
  THINK_FORMAT_PATTERN,
  builtinReward,
  checkRewardValues,
  finalAnswer,
  isBuiltinRewardName,
  rewardFunctionName,
} from '../../src/engine/train/rewards.ts';

/** Runs a built-in on completions, each with the same columns (or one set of columns per completion). */
function score(spec: Parameters<typeof builtinReward>[0], completions: string[], columns: Record<string, unknown> | Record<string, unknown>[] = {}) {
  const perRow = Array.isArray(columns) ? columns : completions.map(() => columns);
  return builtinReward(spec)(completions.map(() => 'Q'), completions, perRow);
}

describe('format', () => {
  const think = (completions: string[]) => score({ name: 'format', pattern: THINK_FORMAT_PATTERN }, completions);

  it("TRL's think_format_reward: valid formats", () => {
    const completions = [
      '<think>This is my reasoning.</think>This is my answer.',
      '<think>\nThis is my reasoning.\n</think>\nThis is my answer.',
      '<think>\nThis is\nmy reasoning.\n</think>\nThis is my answer.',
      '<think>\nThis is <some tag> my reasoning.</think>\nThis is my answer.',
      '<think></think>\nThis is my answer.',
    ];
    expect(think(completions)).toEqual([1, 1, 1, 1, 1]);
  });

  it("TRL's think_format_reward: invalid formats", () => {
    const completions = [
      '<think>\nThis is my reasoning.\nThis is my answer.',
      '<think>This is my reasoning.\nThis is my answer.',
      'This is my reasoning. This is my answer.',
      'This is my reasoning.\nThis is my answer.',
      'This is my reasoning.</think>\nThis is my answer.',
      'This is my reasoning.</think>This is my answer.',
      'This<think>is my reasoning.</think>\nThis is my answer.',
      '<think>This is<think>my reasoning.</think></think>This is my answer.',
      '<think>This is</think>\nmy\n<think>reasoning.</think>\nThis is my answer.',
    ];
    expect(think(completions)).toEqual(completions.map(() => 0));
  });

  it("TRL's think_format_reward: mixed", () => {
    const completions = [
      '<think>This is my reasoning.</think>This is my answer.',
      '<think>\nThis is my reasoning.\n</think>\nThis is my answer.',
      '<think>This is my reasoning.\nThis is my answer.',
      'This is my reasoning. This is my answer.',
    ];
    expect(think(completions)).toEqual([1, 1, 0, 0]);
  });

  it('by default: reasoning in <think>, then an <answer> block that ends the completion', () => {
    const completions = [
      // TRL's grpo_trainer.md example: the first matches, the second does not.
      '<think>The sum of 1 and 2 is 3, which we multiply by 4 to get 12.</think><answer>(1 + 2) * 4 = 12</answer>',
      'The sum of 3 and 1 is 4, which we multiply by 2 to get 8. So (3 + 1) * 2 = 8.',
      '<think>\nstep 1\nstep 2\n</think>\n<answer>\n42\n</answer>\n',
      '<think>a</think><answer>42</answer> and more',
      '<think>a</think>42',
      '<think>a<think>b</think><answer>42</answer>',
      'x<think>a</think><answer>42</answer>',
    ];
    expect(score({ name: 'format' }, completions)).toEqual([1, 0, 1, 0, 0, 0, 0]);
    expect(score({ name: 'format', pattern: THINK_ANSWER_FORMAT_PATTERN }, completions)).toEqual([1, 0, 1, 0, 0, 0, 0]);
  });

  it('a pattern of its own, with flags, tested anywhere unless anchored', () => {
    expect(score({ name: 'format', pattern: 'blue' }, ['The sky is blue.', 'Blue sky', 'green'])).toEqual([1, 0, 0]);
    expect(score({ name: 'format', pattern: 'blue', flags: 'i' }, ['The sky is blue.', 'Blue sky', 'green'])).toEqual([1, 1, 0]);
    expect(score({ name: 'format', pattern: '^a.b$', flags: 's' }, ['a\nb', 'a\nbc'])).toEqual([1, 0]);
    // "g" would make RegExp.test resume where the previous completion's match ended.
    expect(score({ name: 'format', pattern: 'blue', flags: 'gi' }, ['blue', 'blue', 'Blue'])).toEqual([1, 1, 1]);
  });

  it('a pattern from a recipe never backtracks: a catastrophic one answers at once, look-around is refused', () => {
    // On a backtracking engine (a+)+$ against "aaa…ab" takes 2^n steps.
    const long = 'a'.repeat(5000) + 'b';
    expect(score({ name: 'format', pattern: '^(a+)+$' }, [long, 'aaaa'])).toEqual([0, 1]);
    expect(userErrorFrom(() => builtinReward({ name: 'format', pattern: 'x(?=y)' })).message).toMatch(/^reward_funcs: the "format" reward's pattern is not a valid JavaScript regular expression \(.+\)\.$/);
    expect(userErrorFrom(() => builtinReward({ name: 'format', pattern: 'x', flags: 'm' })).message).toBe('reward_funcs: the "format" reward takes the flags "i" and "s" only (got "m").');
  });

  it('a bad pattern is one sentence before anything runs', () => {
    const error = userErrorFrom(() => builtinReward({ name: 'format', pattern: '(<think>' }));
    expect(error.message).toMatch(/^reward_funcs: the "format" reward's pattern is not a valid JavaScript regular expression \(.+\)\.$/);
    // Positions are the recipe's; and a pattern that is only valid inside the search's own group is refused, as RegExp refuses it.
    expect(userErrorFrom(() => builtinReward({ name: 'format', pattern: 'ab(c' })).message).toBe(
      'reward_funcs: the "format" reward\'s pattern is not a valid JavaScript regular expression (an unclosed "(" at character 3).',
    );
    expect(() => new RegExp(')(')).toThrow(SyntaxError);
    expect(userErrorFrom(() => builtinReward({ name: 'format', pattern: ')(' })).message).toMatch(/^reward_funcs: the "format" reward's pattern is not a valid JavaScript regular expression \(.+\)\.$/);
  });
});

describe('accuracy', () => {
  it('numbers compared numerically: 1,000 = 1000 = 1000.0, fractions, signs', () => {
    const completions = ['The total is 1,000.', 'The total is 1000.0', 'So 999', '\\boxed{-3.50}', '\\boxed{\\frac{1}{2}}', '1/2', '\\boxed{\\dfrac{63}{400}}'];
    const columns = [{ answer: '1000' }, { answer: '1,000' }, { answer: '1000' }, { answer: '-3.5' }, { answer: '0.5' }, { answer: '\\frac{1}{2}' }, { answer: '63/400' }];
    expect(score({ name: 'accuracy' }, completions, columns)).toEqual([1, 1, 0, 1, 1, 1, 1]);
  });

  it("TRL's accuracy_reward cases that need no symbolic maths", () => {
    // test_accuracy_reward_correct_answer / wrong_answer / wrong_answer_no_latex
    expect(score({ name: 'accuracy' }, ['\\boxed{\\frac{63}{400}}', '\\boxed{\\frac{63}{400}}'], [{ solution: '\\frac{63}{400}' }, { solution: '63/400' }])).toEqual([1, 1]);
    expect(score({ name: 'accuracy' }, ['\\boxed{\\frac{64}{400}}'], { solution: '\\frac{63}{400}' })).toEqual([0]);
    expect(score({ name: 'accuracy' }, ['\\boxed{3}'], { solution: '6' })).toEqual([0]);
    // TRL's docstring example
    expect(score({ name: 'accuracy' }, ['My answer is \\boxed{\\frac{1}{3}}', 'My answer is \\boxed{\\frac{1}{2}}'], { solution: '\\frac{1}{3}' })).toEqual([1, 0]);
  });

  it('the final answer: the last \\boxed{…}, <answer>…</answer>, "####", "answer:", else the last number', () => {
    expect(finalAnswer('First \\boxed{1}, then \\boxed{\\frac{2}{3}}.')).toBe('\\frac{2}{3}');
    expect(finalAnswer('<think>maybe 3</think><answer> 4 </answer>')).toBe(' 4 ');
    expect(finalAnswer('6 * 12 = 72\n#### 72')).toBe('72');
    expect(finalAnswer('Answer: Paris.\nThanks')).toBe('Paris.');
    const columns = { answer: '72' };
    const completions = ['3 + 4 = 7, and 8 * 9 = 72', 'Natalia sold 72 clips. Answer: 72 clips', 'It is 72, no, 71', '#### 72', 'nothing'];
    expect(score({ name: 'accuracy' }, completions, columns)).toEqual([1, 1, 0, 1, 0]);
  });

  it("a worked solution as the expected answer: GSM8K's \"#### 72\" and MATH's \\boxed{…} give the answer", () => {
    const gsm8k = { answer: 'Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72' };
    expect(score({ name: 'accuracy' }, ['She sold 72 clips in all.', 'She sold 24.'], gsm8k)).toEqual([1, 0]);
    expect(score({ name: 'accuracy' }, ['so \\boxed{42}'], { solution: 'The answer is $\\boxed{42}$.' })).toEqual([1]);
  });

  it('text answers compared after normalising whitespace, case, $…$ and a final full stop', () => {
    const completions = ['<answer>  paris </answer>', 'Answer: The  Eiffel Tower.', '<answer>Lyon</answer>', '$\\text{Blue}$'];
    const columns = [{ answer: 'Paris' }, { answer: 'the eiffel tower' }, { answer: 'Paris' }, { answer: 'blue' }];
    expect(score({ name: 'accuracy' }, completions, columns)).toEqual([1, 1, 0, 1]);
  });

  it('null where the row has no answer or solution; a number column works; `column` names another', () => {
    const columns = [{ answer: 7 }, { solution: '7' }, {}, { answer: null }, { answer: '  ' }, { answer: ['7'] }];
    expect(score({ name: 'accuracy' }, columns.map(() => '7'), columns)).toEqual([1, 1, null, null, null, null]);
    expect(score({ name: 'accuracy', column: 'target' }, ['7', '7'], [{ target: '7', answer: '8' }, { answer: '7' }])).toEqual([1, null]);
  });
});

describe('json', () => {
  it('1 where the completion, or its first fenced block, parses as JSON', () => {
    const completions = [
      '{"name": "Ada", "age": 36}',
      '  [1, 2, 3]\n',
      'Here it is:\n```json\n{"ok": true}\n```\nDone.',
      'Here:\n```\n[null]\n```',
      '{"name": "Ada",}',
      'Here it is:\n```json\n{"ok": tru}\n```',
      '',
      'hello',
      '42',
    ];
    expect(score({ name: 'json' }, completions)).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 1]);
  });

  const PERSON = {
    type: 'object',
    properties: { name: { type: 'string', minLength: 1 }, age: { type: 'integer', minimum: 0 } },
    required: ['name', 'age'],
    additionalProperties: false,
  };

  it('with a schema: 1 only where the JSON also matches it', () => {
    const completions = [
      '{"name": "Ada", "age": 36}',
      'Here:\n```json\n{"name": "Ada", "age": 36}\n```',
      '{"name": "Ada"}',
      '{"name": "Ada", "age": -1}',
      '{"name": "Ada", "age": 36, "email": "a@b.c"}',
      '[{"name": "Ada", "age": 36}]',
      '{"name": "Ada", "age": 36',
      'hello',
    ];
    expect(score({ name: 'json', schema: PERSON }, completions)).toEqual([1, 1, 0, 0, 0, 0, 0, 0]);
  });

  it('boolean schemas, the drafts named by $schema, and formats as annotations', () => {
    expect(score({ name: 'json', schema: true }, ['1', 'x'])).toEqual([1, 0]);
    expect(score({ name: 'json', schema: false }, ['1', 'x'])).toEqual([0, 0]);
    const tuple2020 = { $schema: 'https://json-schema.org/draft/2020-12/schema', prefixItems: [{ type: 'number' }], items: false };
    expect(score({ name: 'json', schema: tuple2020 }, ['[1]', '[1, 2]', '["a"]'])).toEqual([1, 0, 0]);
    const tuple07 = { $schema: 'http://json-schema.org/draft-07/schema#', items: [{ type: 'number' }], additionalItems: false };
    expect(score({ name: 'json', schema: tuple07 }, ['[1]', '[1, 2]'])).toEqual([1, 0]);
    const dependent2019 = { $schema: 'https://json-schema.org/draft/2019-09/schema', dependentRequired: { a: ['b'] } };
    expect(score({ name: 'json', schema: dependent2019 }, ['{"a": 1, "b": 2}', '{"a": 1}'])).toEqual([1, 0]);
    expect(score({ name: 'json', schema: { type: 'string', format: 'email' } }, ['"not an email"'])).toEqual([1]);
    const defs = { $defs: { id: { type: 'integer' } }, type: 'array', items: { $ref: '#/$defs/id' } };
    expect(score({ name: 'json', schema: defs }, ['[1, 2]', '[1, "2"]'])).toEqual([1, 0]);
  });

  it("a schema's pattern runs on the linear-time matcher, searched as RegExp.test searches", () => {
    const schema = { type: 'object', properties: { code: { type: 'string', pattern: '^(a+)+$' }, tag: { type: 'string', pattern: 'b[0-9]' } } };
    // "(a+)+$" against many a's and a "!" is the classic catastrophic case for a backtracking engine.
    const hostile = JSON.stringify({ code: `${'a'.repeat(5000)}!` });
    expect(score({ name: 'json', schema }, ['{"code": "aaa"}', hostile, '{"tag": "xb7y"}', '{"tag": "b"}'])).toEqual([1, 0, 1, 0]);
    expect(score({ name: 'json', schema: { patternProperties: { '^x_\\d+$': { type: 'number' } } } }, ['{"x_1": 1}', '{"x_1": "a"}', '{"y": "a"}'])).toEqual([1, 0, 1]);
    expect(userErrorFrom(() => builtinReward({ name: 'json', schema: { type: 'string', pattern: 'x(?=a)a' } })).message).toBe(
      'reward_funcs: the "json" reward\'s schema is not a valid JSON Schema (a "pattern" the linear-time matcher cannot run: the group "(?=" at character 2 (only plain and "(?:" groups are supported)).',
    );
  });

  it('a schema that is not one is a UserError naming reward_funcs, before anything runs', () => {
    const refused = (schema: unknown) => {
      const e = userErrorFrom(() => builtinReward({ name: 'json', schema }));
      expect(e.field).toBe('reward_funcs');
      expect(e.message).toMatch(/^reward_funcs: the "json" reward's (schema is not a valid JSON Schema \(.+\)|option "schema": .+)\.$/);
      expect(e.message).not.toMatch(/\n/);
      return e.message;
    };
    expect(refused({ type: 'strin' })).toContain('type');
    expect(refused({ type: 'object', propertis: {} })).toContain('propertis');
    expect(refused({ minLength: -1 })).toContain('minLength');
    expect(refused({ $ref: 'https://example.com/schema.json' })).toContain('https://example.com/schema.json');
    expect(refused({ $schema: 'http://json-schema.org/draft-04/schema#' })).toBe(
      'reward_funcs: the "json" reward\'s schema is not a valid JSON Schema (its "$schema" is "http://json-schema.org/draft-04/schema#"; the drafts read are 2020-12, 2019-09 and draft-07).',
    );
    refused('{"type": "object"}');
    refused([{ type: 'object' }]);
  });
});

describe('length', () => {
  it('−|characters − target| / target: 0 at the target, −1 when empty or twice as long', () => {
    const completions = ['', 'a'.repeat(5), 'a'.repeat(10), 'a'.repeat(15), 'a'.repeat(20), 'a'.repeat(30), '😀'.repeat(10)];
    expect(score({ name: 'length', target: 10 }, completions)).toEqual([-1, -0.5, -0, -0.5, -1, -2, -0]);
  });

  it('needs a positive target', () => {
    expect(userErrorFrom(() => builtinReward({ name: 'length' })).message).toMatch(/^reward_funcs: the "length" reward's option "target": .+\.$/);
    expect(userErrorFrom(() => builtinReward({ name: 'length', target: 0 })).message).toMatch(/^reward_funcs: the "length" reward's option "target": .+\.$/);
  });
});

describe('the registry', () => {
  it('names the four built-ins, each with a description', () => {
    expect(Object.keys(BUILTIN_REWARDS)).toEqual(['accuracy', 'format', 'json', 'length']);
    for (const reward of Object.values(BUILTIN_REWARDS)) expect(reward.description).toMatch(/^[A-Z].*\.$/);
    expect(isBuiltinRewardName('json')).toBe(true);
    expect(isBuiltinRewardName('toString')).toBe(false);
  });

  it('an unknown name or an unknown option is one sentence', () => {
    expect(userErrorFrom(() => builtinReward({ name: 'cosine' })).message).toBe(
      'reward_funcs: "cosine" is not a built-in reward; the built-ins are "accuracy", "format", "json", "length", and a JavaScript reward is named by its file\'s path.',
    );
    expect(userErrorFrom(() => builtinReward({ name: 'json', schemas: {} })).message).toMatch(/^reward_funcs: the "json" reward's options: .*schemas.*\.$/);
  });

  it('names: a built-in by its name, a file by its default export, else by its file name', () => {
    expect(rewardFunctionName({ name: 'format' })).toBe('format');
    expect(rewardFunctionName('rewards/letters.js', 'mentionsDog')).toBe('mentionsDog');
    expect(rewardFunctionName('rewards/letters.js', 'default')).toBe('letters');
    expect(rewardFunctionName('rewards\\count.words.mjs', '')).toBe('count.words');
    expect(rewardFunctionName('rewards/letters.js')).toBe('letters');
  });
});

describe('checkRewardValues', () => {
  it('numbers and nulls pass unchanged', () => {
    expect(checkRewardValues('f', [1, 0.5, null, -2], 4)).toEqual({ values: [1, 0.5, null, -2], warnings: [] });
  });

  it('non-numbers, NaN and ±Infinity become null, with one warning naming the function and the completion', () => {
    const { values, warnings } = checkRewardValues('letters', [1, Number.NaN, '2', Infinity, undefined], 5);
    expect(values).toEqual([1, null, null, null, null]);
    expect(warnings).toEqual([
      'Reward function "letters" returned NaN for completions[1] (and 3 other completions), not a finite number or null, so they get no reward from it.',
    ]);
    expect(checkRewardValues('f', [true, 1], 2)).toEqual({
      values: [null, 1],
      warnings: ['Reward function "f" returned true for completions[0], not a finite number or null, so that completion gets no reward from it.'],
    });
  });

  it('the wrong length or no array: null for every completion, never a throw', () => {
    expect(checkRewardValues('f', [1, 2, 3], 4)).toEqual({
      values: [null, null, null, null],
      warnings: ['Reward function "f" returned 3 values for 4 completions, so it gives no reward to this batch.'],
    });
    expect(checkRewardValues('f', undefined, 2)).toEqual({
      values: [null, null],
      warnings: ['Reward function "f" returned undefined instead of an array of 2 numbers, so it gives no reward to this batch.'],
    });
    expect(checkRewardValues('f', { 0: 1 }, 1).warnings[0]).toContain('returned an object instead');
    expect(checkRewardValues('f', 'x'.repeat(100), 1).warnings[0]).toContain(`returned "${'x'.repeat(40)}…" instead`);
  });
});
