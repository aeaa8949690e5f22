/**
 * The Recipe view's state: the form (remembered per origin, so a reload keeps it), its
 * validation by the engine's parser, the pre-flight memory estimate from the Worker, and GRPO's
 * reward functions tried on sample completions before a run.
 */
import type { AppState } from '../app.svelte.ts';
import { errorText } from '../lib/errors.ts';
import { SETTINGS, readJsonSetting, writeJsonSetting } from '../lib/settings.ts';
import { parseRecipe, type Recipe, type RecipeInput } from '../../engine/recipe.ts';
import type { MemoryEstimate } from '../../engine/estimate.ts';
import type { RewardTrial } from '../../worker/protocol.ts';
import { REWARDS_KEY, formFromRecipe, formWithAdapterConfig, importRecipe, recipeFromLink, restoreForm, validateForm, type RawForm } from './form.ts';
import { draftScripts, readDrafts } from './rewards.ts';
import { zipSync } from 'fflate';
import { trlJobFiles } from '../../engine/trl_job.ts';

export class RecipeStore {
  form = $state<RawForm>(restoreForm(readJsonSetting(SETTINGS.recipe)));
  // A function body, not an expression: the field initialiser runs before `app` is assigned, and a derived value is read only later.
  pageValues = $derived.by(() => ({ model: this.app.model.model?.name ?? 'model', train_file: this.app.data.dataset?.file ?? 'train.jsonl', quantization: this.app.model.model?.quantization ?? null }));
  validation = $derived(validateForm(this.form, this.pageValues));
  estimate = $state.raw<MemoryEstimate | null>(null);
  estimateError = $state<string | null>(null);
  /** True from a recipe change until its estimate is back, so an old figure is not read as the new one. */
  estimatePending = $state(false);
  private estimateSeq = 0;
  /** The reward functions' scores of sample completions ("Try it"), and the rewards as they were then. */
  trial = $state.raw<RewardTrial | null>(null);
  trialRewards = $state<string | null>(null);
  trialError = $state<string | null>(null);
  trialBusy = $state(false);

  /** What opening a recipe link did: its model when that is not the one loaded, or why it could not be read. */
  link = $state<{ model: string | null; error: string | null } | null>(null);

  constructor(private readonly app: AppState) {}

  /**
   * Applies a recipe link in the page's address (`hash`), checked as an imported recipe is, and
   * returns whether there was one. The caller clears it from the address, so a reload keeps the
   * edits made after opening it.
   */
  openLink(hash: string): boolean {
    let link: ReturnType<typeof recipeFromLink>;
    try {
      link = recipeFromLink(hash);
    } catch (e) {
      this.link = { model: null, error: errorText(e) };
      return true;
    }
    if (!link) return false;
    try {
      const { form, model } = importRecipe(link.text, 'the link', this.pageValues, link.scripts);
      this.form = form;
      this.link = { model, error: null };
    } catch (e) {
      this.link = { model: null, error: `The recipe in the link was not applied: ${errorText(e)}` };
    }
    return true;
  }

  setForm(form: RawForm): void {
    this.form = form;
  }

  /** Called (debounced) whenever the form changes. */
  save(): void {
    writeJsonSetting(SETTINGS.recipe, $state.snapshot(this.form));
  }

  /**
   * A resumed run's recipe, shown as the form (it trains with its own stored recipe and reward
   * files either way); JavaScript rewards keep the code the form has for their paths.
   */
  showRecipe(recipe: RecipeInput): void {
    this.form = formFromRecipe(recipe, undefined, this.rewardScripts());
  }

  /**
   * The recipe as a TRL + accelerate job folder, zipped under `folder/`: train.py, the accelerate
   * configs, the dataset and the JavaScript rewards (`engine/trl_job.ts`, as `finetune export-trl`
   * writes it). Null while the recipe is invalid or no dataset is chosen.
   */
  async trlJobZip(folder: string): Promise<Uint8Array | null> {
    const recipe = this.validation.recipe;
    const dataset = this.app.data.dataset;
    if (!recipe || !dataset) return null;
    const files = trlJobFiles(recipe, { train: { name: dataset.file, text: await dataset.data.text() } }, this.rewardScripts());
    const enc = new TextEncoder();
    return zipSync(Object.fromEntries(Object.entries(files).map(([path, content]) => [`${folder}/${path}`, typeof content === 'string' ? enc.encode(content) : content])));
  }

  /** Every JavaScript reward's code by the path `reward_funcs` names it with, for the Worker. */
  rewardScripts(): Record<string, string> {
    return draftScripts(readDrafts(this.form[REWARDS_KEY]));
  }

  /** The LoRA shape of a dropped-in adapter, so continuing to train it uses the same shape. */
  applyAdapterConfig(config: Record<string, unknown>): void {
    this.form = formWithAdapterConfig(this.form, config);
  }

  /**
   * The recipe the Worker reads the data with: the form's, its bad fields at their defaults while
   * it is being fixed (so a GRPO form without rewards yet still reads the data as prompts), and the
   * defaults where even that fails.
   */
  forWorker(): Recipe {
    return this.validation.recipe ?? this.validation.checked ?? parseRecipe(this.pageValues, 'recipe');
  }

  /** Why the reward functions cannot be tried now, or null when they can. */
  get cannotTry(): string | null {
    const { app } = this;
    if (!app.backend) return 'The training worker is still starting.';
    if (!app.model.model) return 'Load a model first (Model): it writes the sample completions.';
    if (!app.data.dataset) return 'Choose a dataset first (Data): its first prompts are the samples.';
    if (!this.validation.recipe) return 'Fix the recipe first: the sampling settings and every reward must be valid.';
    if (app.train.status === 'running' || app.train.status === 'starting') return 'A run is training; try the rewards once it is paused or has ended.';
    return null;
  }

  /**
   * Samples num_generations completions of the dataset's first prompts with the loaded model and
   * scores them with the reward functions, as a training step would, without training.
   */
  async tryRewards(): Promise<void> {
    const recipe = this.validation.recipe;
    const dataset = this.app.data.dataset;
    if (this.cannotTry || !recipe || !dataset || this.trialBusy) return;
    this.trialBusy = true;
    this.trialError = null;
    const rewards = this.form[REWARDS_KEY] as string;
    try {
      this.trial = await this.app.api.tryRewards(JSON.parse(JSON.stringify(recipe)), { file: dataset.file, data: dataset.data }, this.rewardScripts());
      this.trialRewards = rewards;
    } catch (e) {
      this.trial = null;
      this.trialError = errorText(e);
    } finally {
      this.trialBusy = false;
    }
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
