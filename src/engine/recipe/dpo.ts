/** DPO's own fields (TRL's `DPOConfig`). */
import { choice, field, flag } from './fields.ts';
import { PREFERENCE_FIELDS } from './preference.ts';

export const DPO_FIELDS = {
  ...PREFERENCE_FIELDS,
  loss_type: field(choice(['sigmoid', 'ipo', 'hinge']), 'sigmoid',
    'DPO\'s loss: "sigmoid" is the original DPO, "ipo" a squared loss that does not overfit deterministic preferences, "hinge" the SLiC hinge.',
    'DPOConfig.loss_type'),
  precompute_ref_log_probs: field(flag(), false,
    'Compute the reference model\'s log-probs (the adapter off) for every row once before training, instead of one extra forward pass per step.',
    'DPOConfig.precompute_ref_log_probs'),
};
