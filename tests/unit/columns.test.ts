import { describe, expect, it } from 'vitest';
import { mapRow, mappingProblem, proposeMapping, reassign, type ColumnMapping } from '../../src/engine/data/columns.ts';
import { detectFormatFor, type TrainingMethod } from '../../src/engine/data/formats.ts';

const chat = [
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
];
const turns = [
  { from: 'human', value: 'Hi' },
  { from: 'gpt', value: 'Hello!' },
];

/** The proposal for one row's columns, and the format the mapped row is then detected as. */
function propose(row: Record<string, unknown>, method: TrainingMethod): { mapping: ColumnMapping; problem: string | null; format: string | null } {
  const mapping = proposeMapping(Object.keys(row), [row], method);
  const problem = mappingProblem(mapping, [row], method, 'd');
  const format = problem === null ? detectFormatFor(method, [{ line: 1, value: mapRow(row, mapping) }], 'd.jsonl') : null;
  return { mapping, problem, format };
}

describe('proposeMapping: SFT', () => {
  it('keeps our own formats as they are, leaving other columns out', () => {
    expect(propose({ text: 'a story', id: 3 }, 'sft')).toEqual({ mapping: { text: 'text', id: null }, problem: null, format: 'text' });
    expect(propose({ messages: chat, source: 'x' }, 'sft')).toEqual({ mapping: { messages: 'messages', source: null }, problem: null, format: 'messages' });
    expect(propose({ prompt: 'p', completion: 'c' }, 'sft').format).toBe('prompt_completion');
    expect(propose({ instruction: 'i', input: '', output: 'o' }, 'sft')).toEqual({ mapping: { instruction: 'instruction', input: 'input', output: 'output' }, problem: null, format: 'alpaca' });
    expect(propose({ conversations: turns }, 'sft')).toEqual({ mapping: { conversations: 'conversations' }, problem: null, format: 'sharegpt' });
  });

  it('maps the usual other names onto prompt/completion', () => {
    expect(propose({ question: 'q', answer: 'a' }, 'sft').mapping).toEqual({ question: 'prompt', answer: 'completion' });
    expect(propose({ input: 'q', output: 'a' }, 'sft').mapping).toEqual({ input: 'prompt', output: 'completion' });
    expect(propose({ query: 'q', response: 'a', score: 0.5 }, 'sft')).toEqual({ mapping: { query: 'prompt', response: 'completion', score: null }, problem: null, format: 'prompt_completion' });
    expect(propose({ Problem: 'q', Solution: 'a' }, 'sft').mapping).toEqual({ Problem: 'prompt', Solution: 'completion' });
  });

  it('reads a conversation by the shape of its turns', () => {
    expect(propose({ conversation: chat }, 'sft')).toMatchObject({ mapping: { conversation: 'messages' }, format: 'messages' });
    expect(propose({ conversation: turns }, 'sft')).toMatchObject({ mapping: { conversation: 'conversations' }, format: 'sharegpt' });
    // A dialog stored as plain strings becomes user and assistant turns in turn.
    const dialog = propose({ dialog: ['Hi', 'Hello!', 'Bye'] }, 'sft');
    expect(dialog).toMatchObject({ mapping: { dialog: 'messages' }, problem: null, format: 'messages' });
    expect(mapRow({ dialog: ['Hi', 'Hello!', 'Bye'] }, dialog.mapping)).toEqual({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }, { role: 'user', content: 'Bye' }] });
  });

  it('prefers a conversation over a pair over text, and takes the only text column of an unnamed dataset', () => {
    expect(propose({ text: 't', messages: chat }, 'sft').mapping).toEqual({ text: null, messages: 'messages' });
    expect(propose({ story: 't', question: 'q', answer: 'a' }, 'sft').mapping).toEqual({ story: null, question: 'prompt', answer: 'completion' });
    expect(propose({ sentence: 'Once upon a time', id: 1 }, 'sft').mapping).toEqual({ sentence: 'text', id: null });
  });

  it('passes over a column whose values its field does not take', () => {
    // "text" holds numbers here, so it is not the text; "body" is.
    expect(propose({ text: 5, body: 'words' }, 'sft').mapping).toEqual({ text: null, body: 'text' });
  });
});

describe('proposeMapping: preference methods', () => {
  it('DPO, ORPO and SimPO take chosen/rejected and their prompt', () => {
    for (const method of ['dpo', 'orpo', 'simpo'] as const) {
      expect(propose({ prompt: 'p', chosen: 'c', rejected: 'r' }, method)).toEqual({ mapping: { prompt: 'prompt', chosen: 'chosen', rejected: 'rejected' }, problem: null, format: 'preference' });
    }
    expect(propose({ question: 'p', response_chosen: 'c', response_rejected: 'r', margin: 1 }, 'dpo').mapping).toEqual({ question: 'prompt', response_chosen: 'chosen', response_rejected: 'rejected', margin: null });
    expect(propose({ chosen: chat, rejected: chat }, 'dpo')).toMatchObject({ problem: null, format: 'implicit_preference' });
  });

  it('KTO takes labelled completions, else pairs', () => {
    expect(propose({ prompt: 'p', completion: 'c', label: true }, 'kto')).toEqual({ mapping: { prompt: 'prompt', completion: 'completion', label: 'label' }, problem: null, format: 'unpaired_preference' });
    expect(propose({ question: 'p', answer: 'c', is_desirable: false }, 'kto').mapping).toEqual({ question: 'prompt', answer: 'completion', is_desirable: 'label' });
    expect(propose({ prompt: 'p', chosen: 'c', rejected: 'r' }, 'kto')).toMatchObject({ mapping: { prompt: 'prompt', chosen: 'chosen', rejected: 'rejected' }, format: 'preference' });
    // A label that is not true/false is not KTO's label.
    expect(propose({ prompt: 'p', completion: 'c', label: 3 }, 'kto').mapping.label).toBeNull();
  });
});

describe('proposeMapping: GRPO', () => {
  it('takes the prompt and keeps every other column for the reward functions', () => {
    const qa = propose({ question: 'What is 2+2?', answer: '4', id: 7 }, 'grpo');
    expect(qa).toEqual({ mapping: { question: 'prompt', answer: 'answer', id: 'id' }, problem: null, format: 'prompt_only' });
    expect(mapRow({ question: 'What is 2+2?', answer: '4', id: 7 }, qa.mapping)).toEqual({ prompt: 'What is 2+2?', answer: '4', id: 7 });
    expect(propose({ prompt: chat, solution: 's' }, 'grpo').mapping).toEqual({ prompt: 'prompt', solution: 'solution' });
  });
});

describe('mappingProblem', () => {
  const sample = [{ title: 'T', question: 'q', answer: 'a', score: 3, label: 'yes', turns }];

  it('says which field is missing and what the method takes', () => {
    expect(mappingProblem({ question: 'prompt' }, sample, 'sft', 'org/ds (train)')).toBe(
      'org/ds (train): no column is mapped to "completion"; SFT takes "text"; "messages"; "conversations"; "prompt" and "completion"; or "instruction" and "output" (and "input").',
    );
    expect(mappingProblem({ question: null, answer: null }, sample, 'dpo', 'd')).toBe('d: no column is mapped to a field DPO trains on; DPO takes "chosen" and "rejected" (and "prompt").');
    expect(mappingProblem({ question: 'prompt' }, sample, 'dpo', 'd')).toBe('d: no column is mapped to "chosen" and "rejected"; DPO takes "chosen" and "rejected" (and "prompt").');
    expect(mappingProblem({ answer: 'answer' }, sample, 'grpo', 'd')).toMatch(/^d: no column is mapped to a field GRPO trains on; GRPO takes "prompt", and gives the other columns to the reward functions\.$/);
  });

  it('names a column whose values its field does not take', () => {
    expect(mappingProblem({ score: 'prompt', answer: 'completion' }, sample, 'sft', 'd')).toBe('d: column "score" holds numbers (row 1), so it cannot be "prompt", which takes text or a list of {role, content} messages.');
    expect(mappingProblem({ question: 'prompt', answer: 'completion', label: 'label' }, sample, 'kto', 'd')).toBe('d: column "label" holds text (row 1), so it cannot be "label", which takes true or false.');
    expect(mappingProblem({ turns: 'messages' }, sample, 'sft', 'd')).toMatch(/column "turns" holds lists of ShareGPT turns \(\{from, value\}\) \(row 1\), so it cannot be "messages"/);
    expect(mappingProblem({ turns: 'conversations' }, sample, 'sft', 'd')).toBeNull();
  });

  it('refuses two columns on one field, a field of another format, and a field the method has not', () => {
    expect(mappingProblem({ title: 'prompt', question: 'prompt', answer: 'completion' }, sample, 'sft', 'd')).toBe('d: columns "title" and "question" are both mapped to "prompt"; a field takes one column, so leave one of them out.');
    expect(mappingProblem({ title: 'text', question: 'prompt', answer: 'completion' }, sample, 'sft', 'd')).toMatch(/^d: "text" \(column "title"\) is not part of the same row format as "prompt" and "completion", so leave column "title" out; SFT takes/);
    expect(mappingProblem({ question: 'prompt', answer: 'completion' }, sample, 'dpo', 'd')).toMatch(/^d: column "answer" is mapped to "completion", which DPO rows do not have; DPO takes/);
    // GRPO keeps a column under its own name, and only its own.
    expect(mappingProblem({ question: 'prompt', answer: 'answer' }, sample, 'grpo', 'd')).toBeNull();
    expect(mappingProblem({ question: 'prompt', answer: 'solution' }, sample, 'grpo', 'd')).toMatch(/column "answer" is mapped to "solution", which GRPO rows do not have/);
  });
});

describe('reassign', () => {
  it('gives a field to one column: the column that had it is left out', () => {
    const mapping: ColumnMapping = { title: null, question: 'prompt', answer: 'completion' };
    expect(reassign(mapping, 'title', 'prompt')).toEqual({ title: 'prompt', question: null, answer: 'completion' });
    expect(reassign(mapping, 'answer', null)).toEqual({ title: null, question: 'prompt', answer: null });
    expect(mapping.question).toBe('prompt');
  });
});

describe('mapRow', () => {
  it('renames, drops left-out columns and leaves a missing value missing', () => {
    expect(mapRow({ q: 'x', a: 'y', junk: 1 }, { q: 'prompt', a: 'completion', junk: null })).toEqual({ prompt: 'x', completion: 'y' });
    expect(mapRow({ q: 'x' }, { q: 'prompt', a: 'completion' })).toEqual({ prompt: 'x' });
  });
});
