/**
 * The page's state: one store per view (model, data, recipe, train, chat, runs), each given this
 * thin app state for the Worker API and its neighbours, handed to the views with `setContext`.
 * Everything heavy (tokenising, training, generating) happens in the Worker.
 */
import { getContext, setContext } from 'svelte';
import type { Remote } from 'comlink';
import type { BackendInfo } from '../engine/backend/index.ts';
import type { StudioApi } from '../worker/protocol.ts';
import { connectWorker, transfer, type WorkerConnection } from './connect.ts';
import { openRewardSandbox } from './lib/reward_sandbox.ts';
import { errorText } from './lib/errors.ts';
import { ChatStore } from './chat/chat.svelte.ts';
import { DataStore } from './data/data.svelte.ts';
import { ModelStore } from './model/model.svelte.ts';
import { RecipeStore } from './recipe/recipe.svelte.ts';
import { RunsStore } from './runs/runs.svelte.ts';
import { TrainStore } from './train/train.svelte.ts';

export type View = 'model' | 'data' | 'recipe' | 'train' | 'chat' | 'runs';

export class AppState {
  readonly api: Remote<StudioApi>;
  view = $state<View>('model');
  backend = $state.raw<BackendInfo | null>(null);
  backendError = $state<string | null>(null);
  workerError = $state<string | null>(null);

  readonly model: ModelStore;
  readonly data: DataStore;
  readonly recipe: RecipeStore;
  readonly train: TrainStore;
  readonly chat: ChatStore;
  readonly runs: RunsStore;

  constructor(private readonly connection: WorkerConnection = connectWorker()) {
    this.api = connection.api;
    this.model = new ModelStore(this);
    this.data = new DataStore(this);
    this.recipe = new RecipeStore(this);
    this.train = new TrainStore(this);
    this.chat = new ChatStore(this);
    this.runs = new RunsStore(this);
  }

  /** Picks the backend, reads the runs list, and restores the last visit's model and dataset. */
  async start(): Promise<void> {
    // A shared recipe link opens on the Recipe view; the address is cleared so a reload keeps later edits.
    if (this.recipe.openLink(location.hash)) {
      this.view = 'recipe';
      history.replaceState(history.state, '', location.pathname + location.search);
    }
    this.connection.worker.addEventListener('error', (ev) => {
      this.workerError = `The training worker stopped: ${ev.message || 'it could not be loaded'}. Reload the page to start it again.`;
    });
    try {
      this.backend = await this.api.init('auto');
    } catch (e) {
      this.backendError = errorText(e);
      return;
    }
    // GRPO's JavaScript rewards run in a sandboxed iframe of this page; the Worker talks to it over this port.
    const sandbox = openRewardSandbox();
    await this.api.attachRewardSandbox(transfer(sandbox.port, [sandbox.port]));
    await Promise.all([this.runs.refresh(), this.model.refreshCached()]);
    await this.model.restore();
    await this.data.restore();
  }

  /** A new model was loaded: what depended on the old one starts again. */
  modelChanged(): void {
    this.runs.clearAdapter();
    this.chat.clear();
    void this.data.inspect();
    void this.recipe.runEstimate();
    void this.runs.refresh();
  }

  /**
   * Asks the browser not to evict checkpoints under storage pressure. Only a page can ask (not the
   * Worker), and browsers grant it by their own rules, so a refusal changes nothing here.
   */
  async persistStorage(): Promise<void> {
    try {
      if (navigator.storage?.persist && !(await navigator.storage.persisted())) await navigator.storage.persist();
    } catch {
      // Not offered in this context.
    }
  }
}

const KEY = Symbol('app');

export function provideApp(app: AppState): void {
  setContext(KEY, app);
}

export function useApp(): AppState {
  const app = getContext<AppState | undefined>(KEY);
  if (!app) throw new Error('useApp() outside the studio: the App component provides it');
  return app;
}
