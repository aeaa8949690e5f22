/** SimPO's own fields (TRL's `CPOConfig` with loss_type "simpo"). */
import { field, number } from './fields.ts';
import { PREFERENCE_FIELDS } from './preference.ts';

export const SIMPO_FIELDS = {
  ...PREFERENCE_FIELDS,
  simpo_gamma: field(number({ ge: 0 }), 0.5,
    'SimPO\'s target reward margin γ: the chosen completion must beat the rejected one by at least this.',
    'CPOConfig.simpo_gamma'),
};
