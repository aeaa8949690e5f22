/**
 * The Recipe view's state: the form (remembered per origin, so a reload keeps it), its
 * validation by the engine's parser, and the pre-flight memory estimate from the Worker.
 */
import type { AppState } from '../app.svelte.ts';
import { errorText } from '../lib/errors.ts';
import { SETTINGS, readJsonSetting, writeJsonSetting } from '../lib/settings.ts';
import { parseRecipe, type Recipe, type RecipeInput } from '../../engine/recipe.ts';
import type { MemoryEstimate } from '../../engine/estimate.ts';
import { formFromRecipe, formWithAdapterConfig, restoreForm, validateForm, type RawForm } from './form.ts';

export class RecipeStore {
  form = $state<RawForm>(restoreForm(readJsonSetting(SETTINGS.recipe)));
  // A function body, not an expression: the field initialiser runs before `app` is assigned, and a derived value is read only later.
  pageValues = $derived.by(() => ({ model: this.app.model.model?.name ?? 'model', train_file: this.app.data.dataset?.file ?? 'train.jsonl' }));
  validation = $derived(validateForm(this.form, this.pageValues));
  estimate = $state.raw<MemoryEstimate | null>(null);
  estimateError = $state<string | null>(null);
  /** True from a recipe change until its estimate is back, so an old figure is not read as the new one. */
  estimatePending = $state(false);
  private estimateSeq = 0;

  constructor(private readonly app: AppState) {}

  setForm(form: RawForm): void {
    this.form = form;
  }

  /** Called (debounced) whenever the form changes. */
  save(): void {
    writeJsonSetting(SETTINGS.recipe, $state.snapshot(this.form));
  }

  /** A resumed run's recipe, shown as the form (it trains with its own stored recipe either way). */
  showRecipe(recipe: RecipeInput): void {
    this.form = formFromRecipe(recipe);
  }

  /** The LoRA shape of a dropped-in adapter, so continuing to train it uses the same shape. */
  applyAdapterConfig(config: Record<string, unknown>): void {
    this.form = formWithAdapterConfig(this.form, config);
  }

  /** The recipe the Worker gets: the form's when it is valid, the defaults otherwise. */
  forWorker(): Recipe {
    return this.validation.recipe ?? parseRecipe(this.pageValues, 'recipe');
  }

  async runEstimate(): Promise<void> {
    const recipe = this.validation.recipe;
    const seq = ++this.estimateSeq;
    if (!this.app.model.model || !recipe) {
      this.estimate = null;
      this.estimatePending = false;
      return;
    }
    try {
      const estimate = await this.app.api.estimateMemory(recipe);
      if (seq === this.estimateSeq) {
        this.estimate = estimate;
        this.estimateError = null;
      }
    } catch (e) {
      if (seq === this.estimateSeq) {
        this.estimate = null;
        this.estimateError = errorText(e);
      }
    } finally {
      if (seq === this.estimateSeq) this.estimatePending = false;
    }
  }
}
