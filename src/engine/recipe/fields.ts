/**
 * How a recipe field is defined: a zod schema together with the words that explain it (what a
 * valid value looks like, its default, its doc line and where it lives in TRL). The words go into
 * a registry keyed by the schema, which `RECIPE_FIELDS` (schema.ts) reads back, so every field is
 * documented once, at its definition.
 */
import { z } from 'zod';
import type { MethodName } from './shared.ts';

/** How a field's value is written on a command line, so an override string can be converted. */
export type FieldKind = 'string' | 'number' | 'integer' | 'boolean' | 'enum' | 'modules' | 'list';

export interface RecipeField {
  /** One line for people: what the field does. */
  doc: string;
  /** The methods the field applies to; undefined for every method. */
  methods?: readonly MethodName[];
  /** The value used when the recipe leaves the field out; undefined when there is none. */
  default: unknown;
  /** Where the field lives on the TRL/PEFT side, e.g. `SFTConfig.learning_rate`. */
  trl: string;
  /** What a valid value looks like, finishing the sentence `"<field>" must be …`. */
  expect: string;
  kind: FieldKind;
  nullable: boolean;
  required: boolean;
  choices?: readonly string[];
}

/** What a definition says about its field; the methods come from the method objects that hold it. */
export type FieldMeta = Omit<RecipeField, 'methods'>;

/** The words of every defined field, by its schema. */
export const fieldMeta = z.registry<FieldMeta>();

/** A value type: the zod schema together with the words used to explain it. */
export interface FieldType<S extends z.ZodType> {
  schema: S;
  kind: FieldKind;
  expect: string;
  nullable?: boolean;
  choices?: readonly string[];
}

// ---- value types ----

export function text(expect: string, minLength = 1): FieldType<z.ZodString> {
  return { schema: z.string().min(minLength), kind: 'string', expect };
}

export function integer(min: number): FieldType<z.ZodNumber> {
  return { schema: z.number().int().min(min), kind: 'integer', expect: `an integer of at least ${min}` };
}

export function number(bounds: { gt?: number; ge?: number; lt?: number; le?: number }): FieldType<z.ZodNumber> {
  let schema = z.number();
  const words: string[] = [];
  if (bounds.gt !== undefined) {
    schema = schema.gt(bounds.gt);
    words.push(`greater than ${bounds.gt}`);
  }
  if (bounds.ge !== undefined) {
    schema = schema.gte(bounds.ge);
    words.push(`of at least ${bounds.ge}`);
  }
  if (bounds.lt !== undefined) {
    schema = schema.lt(bounds.lt);
    words.push(`below ${bounds.lt}`);
  }
  if (bounds.le !== undefined) {
    schema = schema.lte(bounds.le);
    words.push(`of at most ${bounds.le}`);
  }
  return { schema, kind: 'number', expect: `a number ${words.join(' and ')}` };
}

export function flag(): FieldType<z.ZodBoolean> {
  return { schema: z.boolean(), kind: 'boolean', expect: 'true or false' };
}

export function choice<const T extends readonly [string, ...string[]]>(values: T, expect?: string): FieldType<z.ZodEnum<{ [K in T[number]]: K }>> {
  return {
    schema: z.enum(values),
    kind: 'enum',
    expect: expect ?? `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`,
    choices: values,
  };
}

export function nullable<S extends z.ZodType>(type: FieldType<S>): FieldType<z.ZodNullable<S>> {
  return { ...type, schema: type.schema.nullable(), expect: `${type.expect}, or null`, nullable: true };
}

// ---- fields: a default, a definition, or neither ----

function meta(type: FieldType<z.ZodType>, dflt: unknown, required: boolean, doc: string, trl: string): FieldMeta {
  const { kind, expect, nullable = false, choices } = type;
  return { doc, default: dflt, trl, expect, kind, nullable, required, choices };
}

/** A field with a default value. */
export function field<S extends z.ZodType>(type: FieldType<S>, dflt: z.output<S>, doc: string, trl: string) {
  // A zod v4 default is returned as-is, so the stored value must already be the output type.
  const schema = (type.schema as unknown as z.ZodType<z.output<S>, z.input<S>>).default(dflt as never);
  fieldMeta.add(schema, meta(type, dflt, false, doc, trl));
  return schema;
}

/** A field the recipe must set. */
export function required<S extends z.ZodType>(type: FieldType<S>, doc: string, trl: string): S {
  fieldMeta.add(type.schema, meta(type, undefined, true, doc, trl));
  return type.schema;
}

/** A field that may be left out, with no value standing in for it. */
export function optional<S extends z.ZodType>(type: FieldType<S>, doc: string, trl: string) {
  const schema = type.schema.optional();
  fieldMeta.add(schema, meta(type, undefined, false, doc, trl));
  return schema;
}
