import { SingleBar } from 'cli-progress';
import type { LoadProgress } from '../engine/io/model_folder.ts';
import type { LogEntry } from '../engine/train/trainer.ts';
import { estimateEta } from '../engine/train/eta.ts';

/**
 * Training progress: a bar with loss, tokens/s and ETA on a terminal; one plain line per
 * logged step otherwise (CI logs, pipes), so nothing is lost to carriage returns.
 */
export class Progress {
  private readonly bar: SingleBar | null;
  private readonly out: NodeJS.WriteStream;
  private loss = NaN;
  private tps = 0;
  private total = 0;
  /** When the first step of this process was logged: the ETA's pace is measured from there. */
  private first: { step: number; time: number } | null = null;

  constructor(total: number, start: number, out: NodeJS.WriteStream) {
    this.out = out;
    this.bar = out.isTTY
      ? new SingleBar({
          stream: out,
          format: 'step {value}/{total} |{bar}| loss {loss} | {tps} tok/s | ETA {left}',
          hideCursor: true,
        })
      : null;
    this.total = total;
    this.bar?.start(total, start, { loss: '-', tps: '-', left: '–' });
  }

  update(e: LogEntry): void {
    if (e.loss !== undefined) this.loss = e.loss;
    if (e.tokens_per_second !== undefined) this.tps = e.tokens_per_second;
    if (this.bar) {
      this.bar.update(e.step, { loss: fmt(this.loss), tps: Math.round(this.tps), left: this.timeLeft(e.step) });
      return;
    }
    const parts = [`step ${e.step}`, `epoch ${e.epoch}`];
    if (e.loss !== undefined) parts.push(`loss ${fmt(e.loss)}`, `grad_norm ${fmt(e.grad_norm ?? NaN)}`, `lr ${(e.learning_rate ?? 0).toExponential(3)}`, `${Math.round(e.tokens_per_second ?? 0)} tok/s`);
    if (e.reward !== undefined) parts.push(`reward ${fmt(Number(e.reward ?? NaN))}`);
    if (e.eval_loss !== undefined) parts.push(`eval_loss ${fmt(e.eval_loss)}`);
    this.out.write(parts.join('  ') + '\n');
  }

  /** A line above the bar (a warning during training); the bar is drawn again at the next update. */
  note(line: string): void {
    this.out.write(this.bar ? `\r\x1b[2K${line}\n` : `${line}\n`);
  }

  /**
   * Time left from the pace since this process's first logged step (the first step also pays
   * for start-up, so it only starts the clock): "–" until a pace exists.
   */
  private timeLeft(step: number): string {
    const now = Date.now();
    this.first ??= { step, time: now };
    const left = estimateEta(this.first.step, this.first.time, step, now, this.total);
    if (left === null) return '–';
    const s = Math.round(left);
    return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  }

  done(): void {
    this.bar?.stop();
  }
}

function fmt(x: number): string {
  return Number.isFinite(x) ? x.toFixed(4) : String(x);
}

/**
 * Weight loading, tensor by tensor, as a bar of megabytes on a terminal, so a slow disk or a big
 * model never looks hung. Off a terminal (logs, pipes) it stays silent: a refused input must
 * still be the one line printed.
 */
export function loadProgress(out: NodeJS.WriteStream): ((p: LoadProgress) => void) | undefined {
  if (!out.isTTY) return undefined;
  const mb = (n: number) => Math.round(n / 2 ** 20);
  let bar: SingleBar | null = null;
  return (p) => {
    if (!bar) {
      bar = new SingleBar({ stream: out, format: 'loading weights |{bar}| {value}/{total} MB, tensor {index}/{count}', hideCursor: true, clearOnComplete: true });
      bar.start(mb(p.totalBytes), 0, { index: 0, count: p.count });
    }
    bar.update(mb(p.bytes), { index: p.index, count: p.count });
    if (p.index === p.count) bar.stop();
  };
}
