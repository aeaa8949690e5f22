/**
 * SFT's own fields (TRL's `SFTConfig`): which tokens of a row the loss trains on. The preference
 * methods train on the completions they compare, so they have no such choice.
 */
import { field, flag } from './fields.ts';

export const SFT_FIELDS = {
  completion_only_loss: field(flag(), true,
    'For prompt/completion rows, train only on the completion tokens; false also trains on the prompt.',
    'SFTConfig.completion_only_loss'),
  assistant_only_loss: field(flag(), true,
    'For conversations, train only on assistant turns where the chat template marks them (TRL defaults to false).',
    'SFTConfig.assistant_only_loss'),
};
