/**
 * Preference data as TRL tokenises it: pairs (prompt, chosen, rejected) for DPO, ORPO and SimPO,
 * and unpaired rows (prompt, completion, label) for KTO. Token lists are kept apart (prompt and
 * completion), so a method builds the sequences it needs (KTO's mismatched pairs for its KL term).
 */

/** One tokenised preference pair: the prompt's tokens once, each completion's own tokens after it. */
export interface PairExample {
  /** 1-based line of the row in its file. */
  line: number;
  prompt_ids: number[];
  chosen_ids: number[];
  rejected_ids: number[];
}

/** One tokenised KTO row: a completion judged desirable (label true) or not. */
export interface KtoExample {
  line: number;
  prompt_ids: number[];
  completion_ids: number[];
  label: boolean;
}
