/**
 * rows.py of an exported TRL job (see trl_job.ts): the studio's row conversions (Alpaca, ShareGPT,
 * system_prompt, use_chat_template, prompt extraction, KTO's pairs) in Python, standard library only.
 */
export const ROWS_PY = String.raw`"""
The dataset rows as TRL's trainers read them, converted as the studio's data pipeline converts
them (src/engine/data/dataset.ts, formats.ts, sft.ts): Alpaca and ShareGPT rows become
conversations, system_prompt goes before every conversation (or conversational prompt) that does
not start with a system message, SFT's use_chat_template false turns conversations into text,
preference pairs get their prompt extracted as TRL's extract_prompt does, and KTO's pairs become
one desirable and one undesirable row each. Standard library only.

datasets gives every row every column, None where a row has none; so a field is present here
when it is not None.
"""

# ShareGPT speaker names as the common exports write them, mapped to chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant", "system": "system", "tool": "tool"}


def _has(row, key):
    return row.get(key) is not None


def _chat(value):
    return isinstance(value, list)


def with_system(messages, system_prompt):
    """A system message first, unless there is one already or no system_prompt."""
    if not system_prompt or (messages and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}] + list(messages)


def _join(messages):
    return "\n".join(m["content"] for m in messages)


def sft_row(row, system_prompt, use_chat_template):
    """An SFT row as SFTTrainer reads it: {"text"}, {"messages"} or {"prompt", "completion"}."""
    if _has(row, "messages"):
        messages = with_system(row["messages"], system_prompt)
        return {"messages": messages} if use_chat_template else {"text": _join(messages)}
    if _has(row, "conversations"):
        messages = [{"role": SHAREGPT_ROLES[turn["from"].lower()], "content": turn["value"]} for turn in row["conversations"]]
        messages = with_system(messages, system_prompt)
        return {"messages": messages} if use_chat_template else {"text": _join(messages)}
    if _has(row, "prompt") or _has(row, "completion"):
        prompt, completion = row["prompt"], row["completion"]
        if not _chat(prompt):
            return {"prompt": prompt, "completion": completion}
        return _chat_prompt_completion(with_system(prompt, system_prompt), completion, use_chat_template)
    if _has(row, "instruction") or _has(row, "output"):
        content = row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")
        prompt = with_system([{"role": "user", "content": content}], system_prompt)
        return _chat_prompt_completion(prompt, [{"role": "assistant", "content": row["output"]}], use_chat_template)
    return {"text": row["text"]}


def _chat_prompt_completion(prompt, completion, use_chat_template):
    if use_chat_template:
        return {"prompt": prompt, "completion": completion}
    # Without the template: the contents joined by newlines, prompt and completion kept apart.
    return {"prompt": _join(prompt) + "\n", "completion": _join(completion)}


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.get("role") == b.get("role") and a.get("content") == b.get("content")


def extract_prompt(chosen, rejected):
    """TRL's extract_prompt: the longest shared start of chosen and rejected (messages, or characters) is the prompt."""
    n = min(len(chosen), len(rejected))
    idx = max(n - 1, 0)
    for i in range(n):
        if not _same(chosen[i], rejected[i]):
            idx = i - 1 if i > 0 and chosen[i - 1] == " " else i
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


def pair_row(row, system_prompt):
    """A preference pair as DPO, ORPO and CPO read it: {"prompt", "chosen", "rejected"}."""
    chosen, rejected = row["chosen"], row["rejected"]
    chat = _chat(chosen)
    # As TRL's maybe_extract_prompt: a text prompt beside conversations is not their start.
    if _has(row, "prompt") and not (chat and isinstance(row["prompt"], str)):
        prompt = row["prompt"]
    else:
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
    return {"prompt": with_system(prompt, system_prompt) if chat else prompt, "chosen": chosen, "rejected": rejected}


def kto_rows(row, system_prompt):
    """KTO's rows {"prompt", "completion", "label"}: a pair gives its chosen (True), then its rejected (False)."""
    if _has(row, "chosen") or _has(row, "rejected"):
        pair = pair_row(row, system_prompt)
        return [
            {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
            {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False},
        ]
    prompt = with_system(row["prompt"], system_prompt) if _chat(row["prompt"]) else row["prompt"]
    return [{"prompt": prompt, "completion": row["completion"], "label": bool(row["label"])}]


def kto_batch(batch, system_prompt):
    """kto_rows over a batch of columns (Dataset.map with batched=True, so a pair can become two rows)."""
    out = {"prompt": [], "completion": [], "label": []}
    for i in range(len(next(iter(batch.values())))):
        for r in kto_rows({k: v[i] for k, v in batch.items()}, system_prompt):
            for k in out:
                out[k].append(r[k])
    return out


def prompt_row(row, system_prompt):
    """A GRPO prompt; the row's other columns stay for the reward functions."""
    prompt = row["prompt"]
    return {**row, "prompt": with_system(prompt, system_prompt) if _chat(prompt) else prompt}
`;
