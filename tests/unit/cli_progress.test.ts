// The CLI's progress bar on a terminal: no "ETA 0s" before any pace exists, a time left once two
// steps have been logged.
import { describe, expect, it } from 'vitest';
import { Progress } from '../../src/cli/progress.ts';

/** Enough of a tty.WriteStream for cli-progress, recording what is written. */
function fakeTerminal(): { stream: NodeJS.WriteStream; text: () => string } {
  let out = '';
  const stream = {
    isTTY: true,
    columns: 160,
    write(s: string) {
      out += s;
      return true;
    },
    cursorTo: () => true,
    clearLine: () => true,
    moveCursor: () => true,
    clearScreenDown: () => true,
    on: () => stream,
    removeListener: () => stream,
  };
  return { stream: stream as unknown as NodeJS.WriteStream, text: () => out };
}

describe('Progress on a terminal', () => {
  it('shows – for the time left until a pace exists, then a time', async () => {
    const term = fakeTerminal();
    const progress = new Progress(10, 0, term.stream);
    progress.update({ step: 1, epoch: 0.1, loss: 2.5, tokens_per_second: 100 });
    await new Promise((r) => setTimeout(r, 20));
    progress.update({ step: 2, epoch: 0.2, loss: 2.4, tokens_per_second: 100 });
    progress.done();
    // Each redraw starts at column 1 (ESC [1G); a frame is one drawing of the bar.
    const frames = term.text().split('\x1b[1G').filter((f) => f.includes('step '));
    const at = (step: number) => frames.filter((f) => f.includes(`step ${step}/10`));
    expect(at(0).length).toBeGreaterThan(0);
    for (const f of [...at(0), ...at(1)]) expect(f).toMatch(/ETA –/);
    expect(at(2).length).toBeGreaterThan(0);
    for (const f of at(2)) expect(f).toMatch(/ETA \d+s/);
  });
});
