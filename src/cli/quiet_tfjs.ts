/**
 * tfjs's CPU backend greets every Node process with advice to install tfjs-node, which we do not
 * use (the engine must run unchanged in a browser). Only that one message is dropped — and the
 * WASM module's "Aborted(OOM)" note, which it prints just before throwing the same words as an
 * error: the CLI turns that error into its own sentence, which must be the one line printed.
 */
const GREETING = 'Hi, looks like you are running TensorFlow.js in Node.js';
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  if (typeof args[0] === 'string' && (args[0].includes(GREETING) || /^Aborted\(/.test(args[0]))) return;
  warn(...args);
};
