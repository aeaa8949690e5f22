/**
 * rewards.py of an exported TRL job (see trl_job.ts): GRPO's built-in rewards with the studio's
 * semantics (src/engine/train/rewards.ts) and the JavaScript rewards through reward_bridge.mjs, in
 * TRL's reward-function shape, standard library only.
 */
export const REWARDS_PY = String.raw`"""
GRPO's reward functions for this job, in TRL's reward-function shape: f(prompts, completions,
completion_ids, **columns) -> list[float | None], None where a function does not apply (TRL's
weighted nansum skips it). The built-ins (accuracy, format, json, length) are the studio's
(src/engine/train/rewards.ts), value for value; a JavaScript reward file runs in node through
reward_bridge.mjs, called as the studio calls it. Standard library only, so it can be imported and
checked without TRL; the json reward's schema option alone needs the jsonschema package.

Completions of conversational prompts arrive from TRL as message lists; like the studio, every
function is handed the completion's text.
"""
import json
import math
import os
import re
import subprocess
import sys
from decimal import Decimal

# JavaScript's \s: Python's differs (it has \x1c-\x1f and \x85, lacks \ufeff).
_WS = "\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_S = "[" + _WS + "]"

# TRL's think format (trl/rewards/format_rewards.py) and the studio's default, reasoning then answer,
# as the studio writes them in JavaScript; format() translates them like any other pattern.
THINK_FORMAT_PATTERN = r"^<think>(?![\s\S]*<think>)[\s\S]*?</think>[\s\S]*$"
THINK_ANSWER_FORMAT_PATTERN = r"^<think>(?![\s\S]*<think>)[\s\S]*?</think>\s*<answer>[\s\S]*?</answer>\s*$"

# What a JavaScript reward may take per call before it gives no reward (the studio's 5 s).
SCRIPT_TIMEOUT_S = 5.0

# Keyword arguments TRL adds that are not dataset columns.
_NOT_COLUMNS = {"trainer_state", "log_extra", "log_metric", "environments"}


def _js_trim(s):
    return re.sub("^" + _S + "+|" + _S + "+\\Z", "", s)


def _js_number(x):
    """A finite number as JavaScript's String(x) writes it (72, 0.5, 1e-7, 1e+21)."""
    if x == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(x))).normalize().as_tuple()
    d = "".join(map(str, digits))
    k, n = len(d), exponent + len(d)
    if k <= n <= 21:
        s = d + "0" * (n - k)
    elif 0 < n <= 21:
        s = d[:n] + "." + d[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + d
    else:
        e = n - 1
        s = d[0] + ("." + d[1:] if k > 1 else "") + "e" + ("+" if e > 0 else "-") + str(abs(e))
    return ("-" if sign else "") + s


def js_pattern(source):
    """
    A JavaScript pattern of the studio's linear-time subset as a Python one with the same matches:
    \\d is ASCII, \\s JavaScript's white space, $ the very end. (Inside a class, \\D and \\S keep
    Python's meaning, which differs on non-ASCII digits and U+FEFF only.)
    """
    out, i, in_class, class_start = [], 0, False, False
    while i < len(source):
        c = source[i]
        if c == "\\" and i + 1 < len(source):
            e = source[i + 1]
            i += 2
            class_start = False
            if e == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif e == "D":
                out.append("\\D" if in_class else "[^0-9]")
            elif e == "s":
                out.append(_WS if in_class else _S)
            elif e == "S":
                out.append("\\S\\x1c-\\x1f\\x85" if in_class else "[^" + _WS + "]")
            else:
                out.append("\\" + e)
            continue
        i += 1
        if in_class:
            if c == "]" and not class_start:
                in_class = False
            class_start = c == "^" and out[-1] == "["
            out.append(c)
        elif c == "[":
            in_class, class_start = True, True
            out.append(c)
        elif c == "$":
            out.append("\\Z")
        else:
            out.append(c)
    return "".join(out)


def completion_text(completion):
    """A completion as the studio hands it to a reward: text (TRL gives conversations as messages)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


# ---- accuracy ----------------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|-?\.[0-9]+")
_PLAIN = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)?(?:\.[0-9]+)?")
_FRACTION = re.compile(r"([+-]?)(?:\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}|([^/]+)/([^/]+))")


def _last_boxed(text):
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start == -1:
        return None
    opening = text.index("{", start)
    depth = 0
    for i in range(opening, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[opening + 1:i]
    return None


def _after_marker(text, marker):
    last = None
    for last in re.finditer(marker, text, re.IGNORECASE):
        pass
    if last is None:
        return None
    rest = _js_trim(text[last.end():].split("\n")[0])
    return None if rest == "" else rest


def final_answer(completion):
    """The last \\boxed{…}, else the last <answer>…</answer>, else after the last "####" or "answer:", else all of it."""
    boxed = _last_boxed(completion)
    if boxed is not None:
        return boxed
    answers = re.findall(r"<answer>([\s\S]*?)</answer>", completion, re.IGNORECASE)
    if answers:
        return answers[-1]
    after = _after_marker(completion, "####|answer" + _S + "*:")
    return completion if after is None else after


def _gold_answer(text):
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    after = _after_marker(text, "####")
    return text if after is None else after


def _expected_answer(columns, column):
    for key in ["answer", "solution"] if column is None else [column]:
        value = columns.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return _js_number(value)
        if isinstance(value, str) and _js_trim(value) != "":
            return _gold_answer(value)
    return None


def _normalise(answer):
    answer = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", answer)
    answer = re.sub(r"\\(?:left|right|!|,|;)", "", answer)
    answer = re.sub(r"\\?\$", "", answer)
    answer = re.sub(r"\\?%|\^\{?\\circ\}?|°", "", answer)
    answer = re.sub(_S + "+", " ", answer)
    answer = _js_trim(answer)
    answer = re.sub(r"\.\Z", "", answer)
    return _js_trim(answer).lower()


def _decimal(s):
    if _PLAIN.fullmatch(s) and re.search("[0-9]", s):
        return float(s.replace(",", ""))
    return None


def _as_number(text):
    compact = re.sub(_S + "+", "", text)
    whole = _decimal(compact)
    if whole is not None:
        return whole
    m = _FRACTION.fullmatch(compact)
    if m is None:
        return None
    num = _decimal(m.group(2) if m.group(2) is not None else m.group(4))
    den = _decimal(m.group(3) if m.group(3) is not None else m.group(5))
    if num is None or den is None or den == 0:
        return None
    return (-1 if m.group(1) == "-" else 1) * (num / den)


def _same_answer(predicted, expected):
    want, got = _normalise(expected), _normalise(predicted)
    want_number = _as_number(want)
    if want_number is None:
        return got == want
    got_number = _as_number(got)
    if got_number is None:
        numbers = _NUMBER.findall(got)
        got_number = _as_number(numbers[-1] if numbers else "")
    return got_number is not None and abs(got_number - want_number) <= 1e-9 * max(1, abs(want_number))


def accuracy_reward(column=None):
    """1 where the final answer equals the row's "answer" (else "solution") column, 0 where not, None without one."""

    def reward(completions, columns):
        out = []
        for completion, row in zip(completions, columns):
            gold = _expected_answer(row, column)
            out.append(None if gold is None else float(_same_answer(final_answer(completion), gold)))
        return out

    return reward


# ---- format, json, length -------------------------------------------------------------------

def format_reward(pattern=None, flags=None):
    """1 where the completion matches the pattern (searched anywhere unless anchored), else 0."""
    re_flags = (re.IGNORECASE if "i" in (flags or "") else 0) | (re.DOTALL if "s" in (flags or "") else 0)
    compiled = re.compile(js_pattern(THINK_ANSWER_FORMAT_PATTERN if pattern is None else pattern), re_flags)
    return lambda completions, columns: [float(compiled.search(c) is not None) for c in completions]


_FENCE = re.compile(r"\x60{3}[ \t]*(?:json)?[ \t]*\n([\s\S]*?)\x60{3}", re.IGNORECASE)


def _refuse_constant(name):
    raise ValueError(name + " is not JSON")


def _json_values(completion):
    m = _FENCE.search(completion)
    values = []
    for text in (completion, m.group(1) if m else None):
        if text is None or _js_trim(text) == "":
            continue
        try:
            values.append(json.loads(text, parse_constant=_refuse_constant))
        except ValueError:
            pass
    return values


def _schema_test(schema):
    import jsonschema  # only for a schema; requirements.txt lists it when the recipe has one

    # The drafts the studio reads, by the $schema that names them (2020-12 when none does).
    named = schema.get("$schema") if isinstance(schema, dict) else None
    drafts = [
        (r"json-schema\.org/draft/2020-12/schema#?\Z", jsonschema.Draft202012Validator),
        (r"json-schema\.org/draft/2019-09/schema#?\Z", jsonschema.Draft201909Validator),
        (r"json-schema\.org/draft-07/schema#?\Z", jsonschema.Draft7Validator),
    ]
    validator = jsonschema.Draft202012Validator if named is None else next(v for p, v in drafts if re.search(p, named))
    return validator(schema).is_valid


def json_reward(schema=None):
    """1 where the completion (or its first fenced block) is JSON, matching the schema where one is given, else 0."""
    matches = (lambda value: True) if schema is None else _schema_test(schema)
    return lambda completions, columns: [float(any(matches(v) for v in _json_values(c))) for c in completions]


def length_reward(target):
    """-|characters - target| / target: 0 at the target length."""
    return lambda completions, columns: [-float(abs(len(c) - target)) / target for c in completions]


# The built-ins by the name reward_funcs gives them.
BUILTINS = {"accuracy": accuracy_reward, "format": format_reward, "json": json_reward, "length": length_reward}


# ---- what a function returned, checked as the studio checks it ------------------------------

def _describe(value):
    """A returned value as the studio's warnings name it (NaN, "abc", undefined, an object)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _js_number(value) if math.isfinite(value) else {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    if isinstance(value, str):
        return json.dumps(value[:40] + "…" if len(value) > 40 else value, ensure_ascii=False)
    if isinstance(value, list):
        return "an array"
    tag = value.get("$")
    if tag == "number":
        return value.get("v")
    if tag == "bigint":
        return str(value.get("v")) + "n"
    return {"undefined": "undefined", "symbol": "a symbol", "function": "a function", "list": "an array", "long": "an array", "array": "an array"}.get(tag, "an object")


def check_reward_values(name, values, expected):
    """Exactly expected values, each a finite number or None, and a warning for anything else."""
    if isinstance(values, dict) and values.get("$") in ("list", "long"):
        values = values.get("v") if values["$"] == "list" else [None] * int(values.get("n", 0))
    if not isinstance(values, list):
        return [None] * expected, ["Reward function \"%s\" returned %s instead of an array of %d numbers, so it gives no reward to this batch." % (name, _describe(values), expected)]
    if len(values) != expected:
        return [None] * expected, ["Reward function \"%s\" returned %d values for %d completions, so it gives no reward to this batch." % (name, len(values), expected)]
    out, bad = [], []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
        else:
            bad.append(i)
            out.append(None)
    if not bad:
        return out, []
    others = " (and %d other completion%s)" % (len(bad) - 1, "s" if len(bad) > 2 else "") if len(bad) > 1 else ""
    which = "that completion gets" if len(bad) == 1 else "they get"
    return out, ["Reward function \"%s\" returned %s for completions[%d]%s, not a finite number or null, so %s no reward from it." % (name, _describe(values[bad[0]]), bad[0], others, which)]


_warned = set()


def _warn(message):
    # Once per distinct message: a function that always fails would say so every step.
    if message not in _warned:
        _warned.add(message)
        print("warning: " + message, file=sys.stderr)


# ---- JavaScript files ---------------------------------------------------------------------

def _node(bridge, script, mode, batch=None):
    return subprocess.run(
        ["node", bridge, script, mode],
        input=json.dumps(batch, default=str) if batch is not None else "",
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
    )


def script_name(here, script, spec):
    """The studio's name for a JavaScript reward: its default export's function name, else the file's name."""
    try:
        done = _node(os.path.join(here, "reward_bridge.mjs"), os.path.join(here, script), "name")
    except subprocess.TimeoutExpired:
        raise SystemExit("%s: did not finish loading within %g s." % (spec, SCRIPT_TIMEOUT_S))
    if done.returncode != 0:
        raise SystemExit("%s: %s" % (spec, done.stderr.strip() or "node exited with code %d" % done.returncode))
    name = json.loads(done.stdout)["name"]
    if name and name != "anonymous":
        return name
    base = re.split(r"[\\/]", spec)[-1]
    return re.sub(r"\.[^.]+$", "", base) or base


def _call_script(bridge, script, batch):
    """The outcome as the studio's sandbox writes it: {"ok": true, "values": …} or {"ok": false, "message": …}."""
    try:
        done = _node(bridge, script, "call", batch)
    except subprocess.TimeoutExpired:
        return {"ok": False, "message": "did not answer within %g s" % SCRIPT_TIMEOUT_S}
    if done.returncode != 0:
        return {"ok": False, "message": "crashed the reward process (exit code %d)" % done.returncode}
    if done.stdout == "":
        return {"ok": False, "message": "did not answer (it returned a promise that never settled)"}
    try:
        outcome = json.loads(done.stdout)
    except ValueError:
        return {"ok": False, "message": "gave an answer the sandbox could not read"}
    if outcome.get("ok") is True or (outcome.get("ok") is False and isinstance(outcome.get("message"), str)):
        return outcome
    return {"ok": False, "message": "gave an answer the sandbox could not read"}


# ---- TRL's reward functions ---------------------------------------------------------------

def reward_funcs(specs, here):
    """
    One TRL reward function per entry of the recipe's reward_funcs, each named as the studio names
    it (TRL logs rewards/<__name__>/mean): a built-in as {"name": …, options}, a JavaScript file as
    {"script": its copy in reward_scripts/, "source": the path the recipe gave}.
    """
    funcs = []
    for spec in specs:
        if "script" in spec:
            name = script_name(here, spec["script"], spec["source"])
            score = _script_scorer(os.path.join(here, "reward_bridge.mjs"), os.path.join(here, spec["script"]), name, spec["source"])
        else:
            options = {k: v for k, v in spec.items() if k != "name"}
            name = spec["name"]
            score = _builtin_scorer(BUILTINS[name](**options), name)
        funcs.append(_trl_reward(score, name))
    return funcs


def _builtin_scorer(fn, name):
    def score(prompts, completions, columns, completion_ids):
        rows = [{k: v[i] for k, v in columns.items()} for i in range(len(completions))]
        try:
            values = fn(completions, rows)
        except Exception as e:  # a built-in that fails gives no reward, as in the studio
            return [None] * len(completions), ["Reward function \"%s\" threw %s, so it gives no reward to this batch." % (name, e)]
        return check_reward_values(name, values, len(completions))

    return score


def _script_scorer(bridge, script, name, source):
    def score(prompts, completions, columns, completion_ids):
        batch = {"prompts": prompts, "completions": completions, "columns": {**columns, "completion_ids": completion_ids}}
        outcome = _call_script(bridge, script, batch)
        if not outcome["ok"]:
            return [None] * len(completions), ["Reward function \"%s\" (%s) %s, so it gives no reward to this batch." % (name, source, outcome["message"])]
        return check_reward_values(name, outcome["values"], len(completions))

    return score


def _trl_reward(score, name):
    def reward(prompts, completions, completion_ids=None, **kwargs):
        texts = [completion_text(c) for c in completions]
        columns = {k: list(v) for k, v in kwargs.items() if k not in _NOT_COLUMNS}
        ids = [list(map(int, c)) for c in completion_ids] if completion_ids is not None else [[] for _ in texts]
        values, warnings = score(list(prompts), texts, columns, ids)
        for message in warnings:
            _warn(message)
        return values

    reward.__name__ = name
    return reward
`;
