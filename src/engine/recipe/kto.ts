/** KTO's own fields (TRL's `KTOConfig`). */
import { field, number } from './fields.ts';
import { PREFERENCE_FIELDS } from './preference.ts';

export const KTO_FIELDS = {
  ...PREFERENCE_FIELDS,
  desirable_weight: field(number({ gt: 0 }), 1.0,
    'KTO: weight of the loss on desirable rows (label true); raise it when they are rarer than undesirable ones.',
    'KTOConfig.desirable_weight'),
  undesirable_weight: field(number({ gt: 0 }), 1.0,
    'KTO: weight of the loss on undesirable rows (label false).',
    'KTOConfig.undesirable_weight'),
};
