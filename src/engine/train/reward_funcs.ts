/**
 * A recipe's `reward_funcs` made callable: built-ins run here, JavaScript files run in an isolated
 * host (a separate process in Node, a sandboxed iframe in the studio; `script_reward.ts`). Every
 * function is scored the same way: whatever it returns, throws or fails to return in time becomes
 * one value or null per completion, plus warnings that name the function. Nothing a reward
 * function does stops a run.
 */
import { UserError } from '../errors.ts';
import type { ChatMessage } from '../data/tokenizer.ts';
import { builtinReward, checkRewardValues, rewardFunctionName } from './rewards.ts';
import { DEFAULT_REWARD_TIMEOUT_MS, type RewardScriptHost } from './script_reward.ts';

/** One entry of `reward_funcs`. */
export type RewardSpec = string | ({ name: string } & Record<string, unknown>);

/** What a reward function is handed for one generation batch, one entry per completion. */
export interface RewardInputs {
  prompts: (string | ChatMessage[])[];
  completions: string[];
  /** Each completion's prompt row's other columns. */
  columns: Record<string, unknown>[];
  completion_ids: number[][];
}

export interface LoadedReward {
  /** The name its values go under: `rewards/<name>/mean`, the rollout log's `rewards`. */
  name: string;
  score(inputs: RewardInputs): Promise<{ values: (number | null)[]; warnings: string[] }>;
}

export interface RewardLoadOptions {
  /** Runs the JavaScript files; needed when `reward_funcs` names one. */
  host?: RewardScriptHost | null;
  /** A file's text by the path the recipe gives; rejects (a UserError) when it cannot be read. */
  readScript?: (path: string) => Promise<string>;
  /** Per call, for the JavaScript functions (default 5 s). */
  timeoutMs?: number;
}

/**
 * Each reward function, ready to score. A built-in's bad option, a file that cannot be read, does
 * not parse or exports no function, and two functions with one name are UserErrors before
 * anything runs.
 */
export async function loadRewardFunctions(specs: readonly RewardSpec[], opts: RewardLoadOptions = {}): Promise<LoadedReward[]> {
  if (specs.length === 0) throw new UserError('reward_funcs: GRPO needs at least one reward function, e.g. [{"name": "length", "target": 200}] or ["rewards/my_reward.js"].', { field: 'reward_funcs' });
  const timeoutMs = opts.timeoutMs ?? DEFAULT_REWARD_TIMEOUT_MS;
  const out: LoadedReward[] = [];
  for (const spec of specs) {
    if (typeof spec !== 'string') {
      const fn = builtinReward(spec);
      const name = rewardFunctionName(spec);
      out.push({
        name,
        async score({ prompts, completions, columns }) {
          let values: unknown;
          try {
            values = fn(prompts, completions, columns);
          } catch (e) {
            return { values: completions.map(() => null), warnings: [`Reward function "${name}" threw ${String(e)}, so it gives no reward to this batch.`] };
          }
          return checkRewardValues(name, values, completions.length);
        },
      });
      continue;
    }
    if (!opts.host || !opts.readScript) {
      throw new UserError(`reward_funcs: "${spec}" is a JavaScript reward, which needs a sandbox to run in; this runner has none.`, { field: 'reward_funcs' });
    }
    const source = await opts.readScript(spec);
    const host = opts.host;
    const { exportName } = await host.load({ path: spec, source });
    const name = rewardFunctionName(spec, exportName);
    out.push({
      name,
      async score({ prompts, completions, columns, completion_ids }) {
        const result = await host.call(spec, { prompts, completions, columns: columnArrays(columns, completion_ids) }, timeoutMs);
        if (!result.ok) {
          return { values: completions.map(() => null), warnings: [`Reward function "${name}" (${spec}) ${result.message}, so it gives no reward to this batch.`] };
        }
        return checkRewardValues(name, result.values, completions.length);
      },
    });
  }
  const seen = new Set<string>();
  for (const r of out) {
    if (seen.has(r.name)) {
      throw new UserError(`reward_funcs: two reward functions are named "${r.name}", so their values could not be told apart in the logs; rename one (a JavaScript file by its default export's function name).`, { field: 'reward_funcs' });
    }
    seen.add(r.name);
  }
  return out;
}

/**
 * The batch's columns as TRL hands them to a reward function (`**kwargs`): one array per column,
 * an entry per completion (undefined → null where a row lacks the column), plus `completion_ids`.
 */
export function columnArrays(columns: Record<string, unknown>[], completionIds: number[][]): Record<string, unknown[]> {
  const keys = new Set<string>();
  for (const c of columns) for (const k of Object.keys(c)) keys.add(k);
  const out: Record<string, unknown[]> = {};
  for (const k of keys) out[k] = columns.map((c) => (Object.hasOwn(c, k) ? c[k] : null));
  out.completion_ids = completionIds;
  return out;
}

/**
 * A warning callback that passes each distinct message on once: a reward function that always
 * throws would otherwise say so every step.
 */
export function onceEach(report: (message: string) => void): (message: string) => void {
  const seen = new Set<string>();
  return (message) => {
    if (seen.has(message)) return;
    seen.add(message);
    report(message);
  };
}
