import { describe, expect, it } from 'vitest';
import { userErrorFrom } from './helpers/errors.ts';
import { compileModulePattern, ModulePatternError } from '../../src/engine/model/module_pattern.ts';
import { parseAdapterConfig } from '../../src/engine/model/lora.ts';

const Q = 'model.layers.0.self_attn.q_proj';
const V = 'model.layers.0.self_attn.v_proj';
const UP = 'model.layers.0.mlp.up_proj';

const matches = (pattern: string, text: string) => compileModulePattern(pattern).fullMatch(text);

function reasonOf(pattern: string): string {
  try {
    compileModulePattern(pattern);
  } catch (e) {
    expect(e).toBeInstanceOf(ModulePatternError);
    return (e as ModulePatternError).reason;
  }
  throw new Error(`expected ${pattern} to be refused`);
}

describe('module patterns match as Python re.fullmatch', () => {
  it('on the patterns PEFT users write', () => {
    expect(matches('.*\\.(q_proj|v_proj)', Q)).toBe(true);
    expect(matches('.*\\.(q_proj|v_proj)', V)).toBe(true);
    expect(matches('.*\\.(q_proj|v_proj)', UP)).toBe(false);
    expect(matches('model.layers.*.self_attn.(q|k|v|o)_proj', Q)).toBe(true);
    expect(matches('model.layers.*.self_attn.(q|k|v|o)_proj', UP)).toBe(false);
    expect(matches('(q_proj|v_proj)', 'q_proj')).toBe(true);
    expect(matches('(q_proj|v_proj)', Q)).toBe(false);
    expect(matches('q_proj', 'q_proj')).toBe(true);
    expect(matches('q_proj', 'q_proj2')).toBe(false);
    expect(matches('.*layers\\.\\d+\\.self_attn\\.[qv]_proj', Q)).toBe(true);
    expect(matches('.*layers\\.\\d+\\.self_attn\\.[^qv]_proj', Q)).toBe(false);
    expect(matches('^(?:.*\\.)?(up|down)_proj$', UP)).toBe(true);
    expect(matches('model\\.layers\\.[0-9]{1,2}\\.mlp\\.\\w+', UP)).toBe(true);
    expect(matches('a{3}', 'aaa')).toBe(true);
    expect(matches('a{3}', 'aa')).toBe(false);
    expect(matches('a{2,}b?', 'aaaab')).toBe(true);
    expect(matches('x(ab)*?y', 'xababy')).toBe(true);
    expect(matches('[]a]+', ']a]')).toBe(true);
    expect(matches('a{', 'a{')).toBe(true);
    expect(matches('', '')).toBe(true);
  });

  it('in bounded time on patterns that make backtracking engines hang', () => {
    const long = 'a'.repeat(5000);
    // Each of these takes exponential time in a backtracking engine on a near-miss text.
    expect(matches('(.*.*)*zz', Q.repeat(50))).toBe(false);
    expect(matches('(a+)+b', long)).toBe(false);
    expect(matches('(a|a)*b', long)).toBe(false);
    expect(matches('((a*)*)*$', long)).toBe(true);
  });
});

describe('module patterns outside the subset', () => {
  it('are refused with the reason', () => {
    expect(reasonOf('(q_proj')).toMatch(/unclosed "\(" at character 1/);
    expect(reasonOf('q_proj)')).toMatch(/unmatched "\)"/);
    expect(reasonOf('[q')).toMatch(/unclosed "\["/);
    expect(reasonOf('*q')).toMatch(/nothing to repeat/);
    expect(reasonOf('q**')).toMatch(/repeated quantifier/);
    expect(reasonOf('q*+')).toMatch(/repeated quantifier/);
    expect(reasonOf('(?=q)')).toMatch(/only plain and "\(\?:" groups/);
    expect(reasonOf('(?i)q')).toMatch(/group/);
    expect(reasonOf('(a)\\1')).toMatch(/escape "\\1"/);
    expect(reasonOf('\\bq')).toMatch(/escape "\\b"/);
    expect(reasonOf('q\\')).toMatch(/end of the pattern/);
    expect(reasonOf('[z-a]')).toMatch(/reversed range/);
    expect(reasonOf('a{1000}')).toMatch(/count above/);
    expect(reasonOf('((((a{100}){100}){100}){100})')).toMatch(/states/);
    expect(reasonOf('a'.repeat(2000))).toMatch(/longer than/);
    expect(reasonOf('('.repeat(200) + ')'.repeat(200))).toMatch(/nested/);
  });
});

describe('adapter_config.json target_modules as a string', () => {
  const config = (target_modules: unknown) => ({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules });

  it('selects the modules the pattern fully matches, by path or bare name', () => {
    expect(parseAdapterConfig(config('.*\\.(q_proj|v_proj)')).target_modules).toEqual(['q_proj', 'v_proj']);
    expect(parseAdapterConfig(config('model.layers.*.self_attn.(q|k|v|o)_proj')).target_modules).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj']);
    expect(parseAdapterConfig(config('(q_proj|v_proj)')).target_modules).toEqual(['q_proj', 'v_proj']);
    expect(parseAdapterConfig(config('q_proj')).target_modules).toEqual(['q_proj']);
  });

  it('returns on a catastrophic-backtracking pattern, refusing it as selecting nothing', () => {
    const e = userErrorFrom(() => parseAdapterConfig(config('(.*.*)*zz')));
    expect(e.message).toMatch(/selects no linear layer/);
    expect(e.field).toBe('target_modules');
  });

  it('refuses a malformed pattern with one sentence naming the file and the field', () => {
    const e = userErrorFrom(() => parseAdapterConfig(config('(q_proj'), 'adapter/adapter_config.json'));
    expect(e.message).toMatch(/^adapter\/adapter_config\.json: "target_modules" "\(q_proj" cannot be used: it has an unclosed "\(" at character 1; .*\.$/);
    expect(e.message.split('. ').length).toBe(1);
    expect(e.field).toBe('target_modules');
    expect(e.file).toBe('adapter/adapter_config.json');
  });

  it('refuses a pattern outside the subset', () => {
    const e = userErrorFrom(() => parseAdapterConfig(config('(?<=self_attn\\.)q_proj')));
    expect(e.message).toMatch(/adapter_config\.json: "target_modules" .* cannot be used: it has the group "\(\?<"/);
  });
});
