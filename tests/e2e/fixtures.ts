/** Files the end-to-end tests hand to the studio: a real tiny model and small datasets. */
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Karpathy's stories260K in the Hugging Face layout (see DESIGN.md, Testing). */
export const STORIES_260K = new URL('../../../shared/models/stories260K/', import.meta.url).pathname;

/** A copy of stories260K in a folder named like a model folder, for the folder picker and the Hub stand-in. */
export function modelFolder(): string {
  const root = mkdtempSync(join(tmpdir(), 'studio-e2e-'));
  const dir = join(root, 'stories260K');
  cpSync(STORIES_260K, dir, { recursive: true, filter: (src) => !/README\.md$|LICENSE$/.test(src) });
  return dir;
}

const STORIES: [string, string][] = [
  ['Once upon a time, there was a little', ' girl named Lily. She loved to play outside in the park.'],
  ['One day, a boy named Tom found a', ' big red ball. He was very happy and played with it all day.'],
  ['Lily and her mom went to the', ' store. They bought apples and a cake for dinner.'],
  ['The cat saw a bird in the', ' tree. The cat wanted to play, but the bird flew away.'],
  ['Tim had a small', ' dog named Spot. Spot liked to run and jump in the grass.'],
  ['Once upon a time, there was a big', ' bear who lived in the forest. He liked to eat honey.'],
  ['Sue wanted to help her', ' dad. She gave him a hug and he smiled at her.'],
  ['The sun was hot, so Ben went to the', ' pool. He swam with his friends and had fun.'],
  ['Mia found a shiny', ' rock on the beach. She put it in her pocket and ran home.'],
  ['The little bird was', ' sad because it could not fly. Its mom helped it try again.'],
  ['Max and Sam built a', ' sandcastle. A big wave came and they laughed.'],
  ['Anna liked to draw', ' pictures of flowers. Her mom put them on the wall.'],
];

/** Twelve prompt/completion rows of TinyStories-like text, which the model already half knows. */
export function storiesJsonl(): string {
  return STORIES.map(([prompt, completion]) => JSON.stringify({ prompt, completion })).join('\n') + '\n';
}

/** Lines 2 and 4 are bad: a cut-off JSON object and a prompt that is not a string. */
export function malformedJsonl(): string {
  return [
    JSON.stringify({ prompt: STORIES[0][0], completion: STORIES[0][1] }),
    '{"prompt": "Once upon a time", "completion": ',
    JSON.stringify({ prompt: STORIES[1][0], completion: STORIES[1][1] }),
    JSON.stringify({ prompt: 7, completion: ' there was a dog.' }),
    JSON.stringify({ prompt: STORIES[2][0], completion: STORIES[2][1] }),
  ].join('\n') + '\n';
}

/** Preference pairs for stories260K (no chat template, so plain text): a happy ending preferred over a sad one. */
export function storyPairsJsonl(): string {
  const names = ['Lily', 'Tom', 'Ben', 'Sue', 'Mia', 'Tim'];
  const places = ['the park', 'the beach'];
  const rows = names.flatMap((n) => places.map((p) => ({ prompt: `Once upon a time, ${n} went to ${p}.`, chosen: ` ${n} was very happy.`, rejected: ` ${n} was very sad.` })));
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}
