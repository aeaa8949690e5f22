/** What Chart.svelte draws, as plain functions: its lines, and the labels of its value axis. */

/** One curve on a chart: a value (or a gap) for each x. */
export interface ChartLine {
  label: string;
  values: (number | null)[];
  color: string;
}

function isPoint(v: number | null): v is number {
  return v !== null && Number.isFinite(v);
}

/** How many lines have at least one point to draw. */
export function drawnLines(lines: ChartLine[]): number {
  return lines.filter((l) => l.values.some(isPoint)).length;
}

/** Whether every point is a whole number (counts), so the axis should have whole-number ticks only. */
export function integerValued(lines: ChartLine[]): boolean {
  let any = false;
  for (const l of lines) {
    for (const v of l.values) {
      if (!isPoint(v)) continue;
      if (!Number.isInteger(v)) return false;
      any = true;
    }
  }
  return any;
}

/** Decimal places that write every multiple of `incr` exactly: 0.0025 → 4, 0.5 → 1, 20 → 0. */
export function decimalsFor(incr: number): number {
  if (!(incr > 0) || !Number.isFinite(incr)) return 0;
  for (let d = 0; d < 20; d++) {
    const scaled = incr * 10 ** d;
    // Tick spacings are decimal numbers stored in binary, so "exact" allows for float dust.
    if (Math.abs(scaled - Math.round(scaled)) <= 1e-6 * scaled) return d;
  }
  return 20;
}

/** The spacing of a row of ticks; a lone tick gets four significant digits. */
function spacingOf(ticks: number[]): number {
  let gap = Infinity;
  for (let i = 1; i < ticks.length; i++) {
    const d = Math.abs(ticks[i] - ticks[i - 1]);
    if (d > 0 && d < gap) gap = d;
  }
  if (Number.isFinite(gap)) return gap;
  const v = Math.abs(ticks[0] ?? 0);
  return v === 0 ? 1 : 10 ** (Math.floor(Math.log10(v)) - 3);
}

/**
 * Labels for value-axis ticks `incr` apart, with exactly the digits that spacing needs, so two
 * ticks never print alike (a fixed three decimals wrote 0.0045 and 0.005 both as "0.005").
 * Learning rates and other values below 0.001 (or from a million up) are written as 2.5e-5.
 */
export function tickLabels(ticks: number[], incr: number = spacingOf(ticks)): string[] {
  const largest = Math.max(0, ...ticks.map(Math.abs));
  const exponential = largest !== 0 && (largest < 1e-3 || largest >= 1e6);
  return ticks.map((v) => {
    // A zero tick reached by adding spacings carries float dust (1e-19) and its sign.
    if (Math.abs(v) < incr / 2) return '0';
    if (!exponential) return v.toFixed(decimalsFor(incr));
    const exponent = Math.floor(Math.log10(Math.abs(v)));
    return v.toExponential(decimalsFor(incr / 10 ** exponent));
  });
}
