// The recipe lives in recipe/ (fields per method, schema, parsing, TRL mapping); this one-line re-export keeps imports of engine/recipe.ts working.
export * from './recipe/index.ts';
