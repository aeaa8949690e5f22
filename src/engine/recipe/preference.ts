/**
 * The fields every offline preference method has (DPO, KTO, ORPO, SimPO): the strength β and the
 * prompt and completion cuts of TRL 0.x. Each method's file spreads them into its own.
 */
import { field, integer, nullable, number } from './fields.ts';

export const PREFERENCE_FIELDS = {
  beta: field(number({ gt: 0 }), 0.1,
    'How strongly the preferences pull: DPO and KTO\'s β (lower stays closer to the reference model, the model with the adapter off), ORPO\'s λ on its odds-ratio term, SimPO\'s reward scale.',
    'DPOConfig.beta / KTOConfig.beta / ORPOConfig.beta / CPOConfig.beta'),
  max_prompt_length: field(nullable(integer(1)), null,
    'Longest prompt in tokens for the preference methods; a longer one keeps its end. null (TRL 1.x, which removed the key) cuts only at max_length, keeping each sequence\'s start.',
    'DPOConfig.max_prompt_length (TRL 0.x)'),
  max_completion_length: field(nullable(integer(1)), null,
    'Longest completion (chosen, rejected) in tokens for the preference methods; a longer one keeps its start. null cuts only at max_length.',
    'DPOConfig.max_completion_length (TRL 0.x)'),
};
