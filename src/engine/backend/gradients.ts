/**
 * tfjs's backward pass with each gradient freed as soon as it has been used.
 *
 * tfjs's `engine.gradients` walks the tape inside one `tidy`, keeping the gradient of every
 * intermediate tensor until the walk ends: the backward pass of a decoder then holds a gradient
 * the size of each activation of every layer at once, three to four times what the forward pass
 * kept. PyTorch frees a gradient once its node has used it. This is tfjs's own algorithm
 * (tape.ts: getFilteredNodesXToY, backpropagateGradients; engine.ts: gradients) with that one
 * change, installed on the engine in place of its method.
 */
import * as tf from '@tensorflow/tfjs';

interface TapeNode {
  id: number;
  kernelName: string;
  outputs: tf.Tensor[];
  inputs: Record<string, tf.Tensor>;
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(nameOrFn: string | (() => T), fn?: () => T): T;
  gradients: (f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor, allowNoGradients?: boolean) => { value: tf.Tensor; grads: tf.Tensor[] };
  eagerGradientsInstalled?: boolean;
}

/** Replaces the engine's `gradients` once; every tf.grad/tf.variableGrads goes through it. */
export function installEagerGradients(): void {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.eagerGradientsInstalled) return;
  engine.eagerGradientsInstalled = true;
  engine.gradients = function (this: EngineInternals, f, xs, dy, allowNoGradients = false) {
    if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
    if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
    const y = this.scopedRun(() => this.startTape(), () => this.endTape(), () => this.tidy('forward', f));
    if (!(y instanceof tf.Tensor)) throw new Error('The result y returned by f() must be a tensor.');
    const tape = this.state.activeTape as TapeNode[];
    const filtered = filteredNodes(tape, xs, y);
    if (!allowNoGradients && filtered.length === 0 && xs.length > 0) {
      throw new Error('Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.');
    }
    return this.tidy('backward', () => {
      const acc = new Map<number, tf.Tensor>();
      acc.set(y.id, dy ?? tf.ones(y.shape));
      const keep = new Set(xs.map((x) => x.id));
      // The caller's dy belongs to the caller.
      if (dy != null) keep.add(y.id);
      backprop(acc, filtered, keep, (fn) => this.tidy(fn));
      const grads = xs.map((x) => acc.get(x.id) as tf.Tensor);
      if (this.state.gradientDepth === 0) {
        for (const node of tape) for (const t of node.saved ?? []) t.dispose();
        this.state.activeTape = null;
      }
      return { value: y, grads };
    });
  };
}

/** The tape nodes on a path from some x to y, each with only the inputs that depend on an x. */
function filteredNodes(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set(xs.map((x) => x.id));
  const nodesFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((input) => fromX.has(input.id))) {
      for (const o of node.outputs) fromX.add(o.id);
      nodesFromX.add(node.id);
    }
  }
  const leadToY = new Set([y.id]);
  const nodesToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => leadToY.has(o.id))) {
      for (const input of Object.values(node.inputs)) leadToY.add(input.id);
      nodesToY.add(node.id);
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!nodesFromX.has(node.id) || !nodesToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, input] of Object.entries(node.inputs)) if (fromX.has(input.id)) inputs[name] = input;
    out.push({ ...node, inputs });
  }
  return out;
}

function backprop(acc: Map<number, tf.Tensor>, tape: TapeNode[], keep: Set<number>, tidy: (fn: () => tf.Tensor) => tf.Tensor): void {
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    const dys = node.outputs.map((o) => acc.get(o.id) ?? null);
    if (node.gradient == null) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
    const inputGradients = node.gradient(dys);
    for (const [name, x] of Object.entries(node.inputs)) {
      if (!(name in inputGradients)) throw new Error(`Cannot backprop through input ${name}. Available gradients found: ${Object.keys(inputGradients)}.`);
      const dx = tidy(() => inputGradients[name]());
      if (dx.dtype !== 'float32') throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' dtype, but has '${dx.dtype}'`);
      if (dx.shape.length !== x.shape.length || dx.shape.some((d, k) => d !== x.shape[k])) {
        throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`);
      }
      const cur = acc.get(x.id);
      if (cur == null) acc.set(x.id, dx);
      else {
        acc.set(x.id, tf.add(cur, dx));
        if (!holds(acc, cur)) cur.dispose();
        if (!holds(acc, dx)) dx.dispose();
      }
    }
    // Each output's gradient has been consumed by the node that produced it.
    for (const o of node.outputs) {
      const g = acc.get(o.id);
      if (g == null || keep.has(o.id)) continue;
      acc.delete(o.id);
      if (!holds(acc, g)) g.dispose();
    }
  }
}

function holds(acc: Map<number, tf.Tensor>, t: tf.Tensor): boolean {
  for (const v of acc.values()) if (v === t) return true;
  return false;
}
