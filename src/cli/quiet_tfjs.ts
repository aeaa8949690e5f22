/**
 * tfjs's CPU backend greets every Node process with advice to install tfjs-node, which we do not
 * use (the engine must run unchanged in a browser). Only that one message is dropped.
 */
const GREETING = 'Hi, looks like you are running TensorFlow.js in Node.js';
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  if (typeof args[0] === 'string' && args[0].includes(GREETING)) return;
  warn(...args);
};
