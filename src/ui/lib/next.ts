/** The "Next: …" line at the foot of each view: what a person does after this view, and where. */
export type ViewId = 'model' | 'data' | 'recipe' | 'train' | 'chat' | 'runs';

export interface NextFacts {
  view: ViewId;
  modelLoaded: boolean;
  datasetChosen: boolean;
  /** The dataset's report is back and has no bad row. */
  datasetUsable: boolean;
  recipeValid: boolean;
  training: boolean;
  /** This tab's run (or a dropped-in adapter) can be chatted with. */
  adapterReady: boolean;
  runCount: number;
}

export interface NextStep {
  text: string;
  /** The view the button opens, or null when the step is on this view. */
  go: ViewId | null;
  label: string | null;
}

export function nextStep(f: NextFacts): NextStep {
  const step = (text: string, go: ViewId | null = null, label: string | null = null): NextStep => ({ text, go, label });
  if (!f.modelLoaded && f.view !== 'model') return step('Load a model first.', 'model', 'Open Model');
  switch (f.view) {
    case 'model':
      return f.modelLoaded ? step('Choose the data to train on: a sample or your own .jsonl file.', 'data', 'Go to Data') : step('Download a model from the list above, or drop a model folder from your disk.');
    case 'data':
      if (!f.datasetChosen) return step('Use a sample, or drop a .jsonl file of your own, above.');
      if (!f.datasetUsable) return step('Fix the rows listed above (or drop a corrected file); training starts once every row reads.');
      return step('Check the recipe: the essentials are set for a first run.', 'recipe', 'Go to Recipe');
    case 'recipe':
      return f.recipeValid ? step('Start training.', 'train', 'Go to Train') : step('Fix the fields marked in red above.');
    case 'train':
      if (f.training) return step('Watch the loss fall; pause any time to try the adapter in Chat.');
      if (f.adapterReady) return step('Talk to the result beside the base model.', 'chat', 'Go to Chat');
      return step('Press Start training above.');
    case 'chat':
      return f.adapterReady ? step('Download the adapter, or compare this run with others.', 'runs', 'Go to Runs') : step('Train a run (Train) or drop a downloaded adapter below to compare it with the base model.', 'train', 'Go to Train');
    case 'runs':
      return f.runCount >= 2 ? step('Tick two or more runs above to compare their curves.') : step('Change the recipe and train again to compare runs here.', 'recipe', 'Go to Recipe');
  }
}
