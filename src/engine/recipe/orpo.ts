/** ORPO's fields (TRL's `ORPOConfig`): the preference methods' own, with beta as its λ. */
import { PREFERENCE_FIELDS } from './preference.ts';

export const ORPO_FIELDS = { ...PREFERENCE_FIELDS };
