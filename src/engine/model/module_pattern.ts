/**
 * PEFT's string `target_modules`: a Python regular expression that must match a module's whole path
 * (`re.fullmatch`). The pattern comes from a file, so it is never handed to a backtracking engine:
 * a subset of the syntax — literals and escapes, `.`, character classes, `\d \w \s` (and their
 * negations), `|`, groups `(...)` / `(?:...)`, `^` / `$`, and the quantifiers `?`, `*`, `+` and
 * `{m,n}` (each optionally lazy) — is compiled to a Thompson NFA and simulated state set by state set,
 * so matching takes at most (length of the text) × (number of states) steps whatever the pattern.
 * Anything else (look-around, back-references, flags, possessive quantifiers) is refused.
 */

/** Why a pattern is refused, as a clause for a sentence ("an unclosed group at character 1"). */
export class ModulePatternError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'ModulePatternError';
  }
}

/** Longest pattern accepted, in characters. */
export const MAX_PATTERN_LENGTH = 1000;
/** Most NFA states a pattern may compile to (counted repetition multiplies them). */
export const MAX_PATTERN_STATES = 10_000;
/** Deepest group nesting accepted. */
const MAX_DEPTH = 100;
/** Largest count accepted in `{m,n}`. */
const MAX_COUNT = 100;

type CharTest = (c: string) => boolean;

type Node =
  | { kind: 'char'; test: CharTest }
  | { kind: 'assert'; at: 'start' | 'end' }
  | { kind: 'seq'; items: Node[] }
  | { kind: 'alt'; options: Node[] }
  | { kind: 'repeat'; node: Node; min: number; max: number | null };

const WORD = /^[\p{L}\p{N}_]$/u;
const SPACE = /^\s$/u;
const CLASS_ESCAPES: Record<string, CharTest> = {
  d: (c) => c >= '0' && c <= '9',
  D: (c) => !(c >= '0' && c <= '9'),
  w: (c) => WORD.test(c),
  W: (c) => !WORD.test(c),
  s: (c) => SPACE.test(c),
  S: (c) => !SPACE.test(c),
};
const CONTROL_ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r', f: '\f', v: '\v' };

/** JavaScript's `s` and `i` flags, for patterns that are searched in free text (a reward's format). */
export interface PatternFlags {
  /** `.` matches a line break too (RegExp `s`, Python's re.DOTALL). */
  dotAll?: boolean;
  /** Letters match either case (RegExp `i`). */
  ignoreCase?: boolean;
}

class Parser {
  private i = 0;
  private depth = 0;
  private readonly chars: string[];

  constructor(
    source: string,
    private readonly flags: PatternFlags = {},
  ) {
    this.chars = [...source];
  }

  parse(): Node {
    const node = this.alternation();
    if (this.i < this.chars.length) {
      // Only an unmatched ')' stops alternation before the end.
      throw new ModulePatternError(`an unmatched ")" at character ${this.i + 1}`);
    }
    return node;
  }

  private peek(): string | undefined {
    return this.chars[this.i];
  }

  private alternation(): Node {
    const options = [this.sequence()];
    while (this.peek() === '|') {
      this.i++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { kind: 'alt', options };
  }

  private sequence(): Node {
    const items: Node[] = [];
    for (let c = this.peek(); c !== undefined && c !== '|' && c !== ')'; c = this.peek()) {
      const at = this.i;
      if (c === '*' || c === '+' || c === '?' || (c === '{' && this.countAhead() !== null)) {
        throw new ModulePatternError(`a "${c}" with nothing to repeat at character ${at + 1}`);
      }
      let node = this.atom();
      const quantified = this.quantifier(node);
      if (quantified !== null) {
        node = quantified;
        const next = this.peek();
        if (next === '*' || next === '+' || next === '?' || (next === '{' && this.countAhead() !== null)) {
          throw new ModulePatternError(`a repeated quantifier ("${next}") at character ${this.i + 1}`);
        }
      }
      items.push(node);
    }
    return items.length === 1 ? items[0] : { kind: 'seq', items };
  }

  private quantifier(node: Node): Node | null {
    const c = this.peek();
    let min: number;
    let max: number | null;
    if (c === '*') [min, max] = [0, null];
    else if (c === '+') [min, max] = [1, null];
    else if (c === '?') [min, max] = [0, 1];
    else if (c === '{') {
      const count = this.countAhead();
      if (count === null) return null;
      [min, max] = [count.min, count.max];
      this.i = count.end - 1;
    } else return null;
    this.i++;
    // Laziness changes which match is found, never whether the whole text matches.
    if (this.peek() === '?') this.i++;
    if (node.kind === 'assert') throw new ModulePatternError(`a quantifier after "^" or "$" at character ${this.i}`);
    return { kind: 'repeat', node, min, max };
  }

  /** `{m}`, `{m,}`, `{,n}` or `{m,n}` starting here, or null (Python then reads "{" as a literal). */
  private countAhead(): { min: number; max: number | null; end: number } | null {
    let j = this.i + 1;
    let text = '';
    while (j < this.chars.length && this.chars[j] !== '}') text += this.chars[j++];
    if (j >= this.chars.length) return null;
    const m = /^(\d*)(,?)(\d*)$/.exec(text);
    if (!m || (m[1] === '' && m[2] === '')) return null;
    const min = m[1] === '' ? 0 : Number(m[1]);
    const max = m[2] === '' ? min : m[3] === '' ? null : Number(m[3]);
    if (min > MAX_COUNT || (max !== null && max > MAX_COUNT)) {
      throw new ModulePatternError(`a count above ${MAX_COUNT} in "{${text}}"`);
    }
    if (max !== null && max < min) throw new ModulePatternError(`a count "{${text}}" whose maximum is below its minimum`);
    return { min, max, end: j + 1 };
  }

  private atom(): Node {
    const at = this.i;
    const c = this.chars[this.i++];
    switch (c) {
      case '(':
        return this.group(at);
      case '[':
        return { kind: 'char', test: this.characterClass(at) };
      case '.':
        return { kind: 'char', test: this.flags.dotAll ? () => true : (x) => x !== '\n' };
      case '^':
        return { kind: 'assert', at: 'start' };
      case '$':
        return { kind: 'assert', at: 'end' };
      case '\\': {
        const e = this.escape(at);
        return { kind: 'char', test: typeof e === 'string' ? (x) => x === e : e };
      }
      default:
        return { kind: 'char', test: (x) => x === c };
    }
  }

  private group(at: number): Node {
    if (this.peek() === '?') {
      if (this.chars[this.i + 1] !== ':') {
        throw new ModulePatternError(`the group "(?${this.chars[this.i + 1] ?? ''}" at character ${at + 1} (only plain and "(?:" groups are supported)`);
      }
      this.i += 2;
    }
    if (++this.depth > MAX_DEPTH) throw new ModulePatternError(`groups nested more than ${MAX_DEPTH} deep`);
    const node = this.alternation();
    this.depth--;
    if (this.peek() !== ')') throw new ModulePatternError(`an unclosed "(" at character ${at + 1}`);
    this.i++;
    return node;
  }

  /** After `[`: ranges, single characters and class escapes, optionally negated with `^`. */
  private characterClass(at: number): CharTest {
    const negated = this.peek() === '^';
    if (negated) this.i++;
    const tests: CharTest[] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) throw new ModulePatternError(`an unclosed "[" at character ${at + 1}`);
      // A "]" first in the class is a literal, as in Python.
      if (c === ']' && !first) {
        this.i++;
        break;
      }
      first = false;
      const lo = this.classMember();
      if (typeof lo !== 'string') {
        tests.push(lo);
        continue;
      }
      if (this.peek() === '-' && this.chars[this.i + 1] !== undefined && this.chars[this.i + 1] !== ']') {
        const dash = this.i;
        this.i++;
        const hi = this.classMember();
        if (typeof hi !== 'string') throw new ModulePatternError(`a range ending in a class escape at character ${dash + 1}`);
        const [a, b] = [lo.codePointAt(0) as number, hi.codePointAt(0) as number];
        if (b < a) throw new ModulePatternError(`the reversed range "${lo}-${hi}" at character ${dash}`);
        tests.push((x) => {
          const p = x.codePointAt(0) as number;
          return p >= a && p <= b;
        });
      } else {
        tests.push((x) => x === lo);
      }
    }
    return (x) => tests.some((t) => t(x)) !== negated;
  }

  /** One character of a class, or a class escape such as `\d`. */
  private classMember(): string | CharTest {
    const at = this.i;
    const c = this.chars[this.i++];
    return c === '\\' ? this.escape(at) : c;
  }

  /** After `\`: a class escape (a test), or a control or escaped punctuation character (a literal). */
  private escape(at: number): CharTest | string {
    const c = this.chars[this.i++];
    if (c === undefined) throw new ModulePatternError('a "\\" at the end of the pattern');
    const cls = CLASS_ESCAPES[c];
    if (cls) return cls;
    const literal = CONTROL_ESCAPES[c] ?? (/[\p{L}\p{N}]/u.test(c) ? undefined : c);
    if (literal === undefined) throw new ModulePatternError(`the escape "\\${c}" at character ${at + 1}`);
    return literal;
  }
}

/** Thompson NFA: states indexed by number, `out` edges by state index. */
type State =
  | { kind: 'char'; test: CharTest; out: number }
  | { kind: 'split'; out: number; out2: number }
  | { kind: 'assert'; at: 'start' | 'end'; out: number }
  | { kind: 'match' };

class Builder {
  readonly states: State[] = [];

  constructor(readonly ignoreCase = false) {}

  add(state: State): number {
    if (this.states.length >= MAX_PATTERN_STATES) {
      throw new ModulePatternError(`more than ${MAX_PATTERN_STATES} states once compiled (the pattern is too long or repeats too much)`);
    }
    this.states.push(state);
    return this.states.length - 1;
  }

  /** Compiles `node` so that it continues to state `next`; returns its entry state. */
  compile(node: Node, next: number): number {
    switch (node.kind) {
      case 'char':
        return this.add({ kind: 'char', test: this.ignoreCase ? caseless(node.test) : node.test, out: next });
      case 'assert':
        return this.add({ kind: 'assert', at: node.at, out: next });
      case 'seq': {
        let entry = next;
        for (let k = node.items.length - 1; k >= 0; k--) entry = this.compile(node.items[k], entry);
        return entry;
      }
      case 'alt': {
        let entry = this.compile(node.options[node.options.length - 1], next);
        for (let k = node.options.length - 2; k >= 0; k--) {
          entry = this.add({ kind: 'split', out: this.compile(node.options[k], next), out2: entry });
        }
        return entry;
      }
      case 'repeat': {
        let entry = next;
        if (node.max === null) {
          // x*: a loop state that either enters x (which returns to it) or leaves.
          const loop = this.add({ kind: 'split', out: -1, out2: next });
          const body = this.compile(node.node, loop);
          (this.states[loop] as { out: number }).out = body;
          entry = loop;
        } else {
          for (let k = node.max; k > node.min; k--) {
            entry = this.add({ kind: 'split', out: this.compile(node.node, entry), out2: next });
          }
        }
        for (let k = 0; k < node.min; k++) entry = this.compile(node.node, entry);
        return entry;
      }
    }
  }
}

/** A character test that also takes the other case of a letter. */
function caseless(test: CharTest): CharTest {
  return (c) => test(c) || test(c.toLowerCase()) || test(c.toUpperCase());
}

/** A compiled pattern: `fullMatch(text)` is Python's `re.fullmatch(pattern, text) is not None`. */
export interface ModulePattern {
  readonly source: string;
  fullMatch(text: string): boolean;
}

/**
 * Compiles a PEFT `target_modules` pattern (or any pattern from a file, with `flags`); throws
 * ModulePatternError for one outside the subset or malformed.
 */
export function compileModulePattern(source: string, flags: PatternFlags = {}): ModulePattern {
  if (source.length > MAX_PATTERN_LENGTH) throw new ModulePatternError(`a pattern longer than ${MAX_PATTERN_LENGTH} characters`);
  const ast = new Parser(source, flags).parse();
  const builder = new Builder(flags.ignoreCase ?? false);
  const match = builder.add({ kind: 'match' });
  const start = builder.compile(ast, match);
  const states = builder.states;
  return { source, fullMatch: (text) => simulate(states, start, [...text]) };
}

/** Runs the NFA over `text` keeping the set of live states: O(text × states), no backtracking. */
function simulate(states: State[], start: number, text: string[]): boolean {
  const seen = new Int32Array(states.length).fill(-1);
  let stamp = 0;
  let current: number[] = [];
  const stack: number[] = [];

  // Adds `s` and every state reachable from it without reading a character (at position `pos`).
  const closure = (s: number, pos: number, into: number[]) => {
    stack.push(s);
    while (stack.length > 0) {
      const k = stack.pop() as number;
      if (seen[k] === stamp) continue;
      seen[k] = stamp;
      const state = states[k];
      if (state.kind === 'split') {
        stack.push(state.out2, state.out);
      } else if (state.kind === 'assert') {
        if (state.at === 'start' ? pos === 0 : pos === text.length) stack.push(state.out);
      } else {
        into.push(k);
      }
    }
  };

  closure(start, 0, current);
  for (let pos = 0; pos < text.length && current.length > 0; pos++) {
    stamp++;
    const next: number[] = [];
    for (const k of current) {
      const state = states[k];
      if (state.kind === 'char' && state.test(text[pos])) closure(state.out, pos + 1, next);
    }
    current = next;
  }
  return current.some((k) => states[k].kind === 'match');
}
