import { describe, expect, it } from 'vitest';
import { decimalsFor, drawnLines, integerValued, tickLabels } from '../../src/ui/lib/chart.ts';

/** Ticks as uPlot places them: multiples of the spacing from the first one at or above `lo`. */
function ticks(lo: number, hi: number, incr: number): number[] {
  const out: number[] = [];
  for (let k = Math.ceil(lo / incr - 1e-9); k * incr <= hi + incr * 1e-9; k++) out.push(k * incr);
  return out;
}

describe('value-axis tick labels', () => {
  it('gives a spacing exactly the decimals it needs', () => {
    expect(decimalsFor(20)).toBe(0);
    expect(decimalsFor(1)).toBe(0);
    expect(decimalsFor(0.5)).toBe(1);
    expect(decimalsFor(0.1)).toBe(1);
    expect(decimalsFor(0.25)).toBe(2);
    expect(decimalsFor(0.0025)).toBe(4);
    expect(decimalsFor(0.0005)).toBe(4);
    expect(decimalsFor(1e-7)).toBe(7);
  });

  it('writes a learning-rate decay without repeating a label', () => {
    // The reported axis: 0.0045 and 0.005 both printed as "0.005" with three decimals.
    expect(tickLabels([0.004, 0.0045, 0.005], 0.0005)).toEqual(['0.0040', '0.0045', '0.0050']);
    expect(tickLabels([0.0025, 0.005, 0.0075], 0.0025)).toEqual(['0.0025', '0.0050', '0.0075']);
  });

  it('writes small values in exponent form and a zero tick as 0', () => {
    expect(tickLabels([0, 5e-6, 1e-5, 1.5e-5, 2e-5], 5e-6)).toEqual(['0', '5e-6', '1.0e-5', '1.5e-5', '2.0e-5']);
    // Float dust from adding spacings is still zero.
    expect(tickLabels([-1e-19, 0.1, 0.2], 0.1)).toEqual(['0', '0.1', '0.2']);
  });

  it('keeps whole numbers whole and finds the spacing when none is given', () => {
    expect(tickLabels([1000, 2000, 3000], 1000)).toEqual(['1000', '2000', '3000']);
    expect(tickLabels([2.2, 2.4, 2.6])).toEqual(['2.2', '2.4', '2.6']);
    expect(tickLabels([0.00312])).toEqual(['0.003120']);
    expect(tickLabels([0.000312])).toEqual(['3.120e-4']);
  });

  it('never prints two adjacent ticks alike, for any spacing uPlot picks', () => {
    for (const base of [1e-7, 1e-5, 1e-3, 0.1, 1, 10, 1e4]) {
      for (const mult of [1, 2, 2.5, 5]) {
        const incr = Number((mult * base).toPrecision(2));
        for (const lo of [0, 3 * incr, 1.7, 123.4]) {
          const t = ticks(lo, lo + 7 * incr, incr);
          const labels = tickLabels(t, incr);
          for (let i = 1; i < labels.length; i++) expect(labels[i], `${t[i - 1]}, ${t[i]} by ${incr}`).not.toBe(labels[i - 1]);
          // Each label reads back as its tick, to within the spacing.
          labels.forEach((l, i) => expect(Math.abs(Number(l) - t[i])).toBeLessThan(incr / 2));
        }
      }
    }
  });
});

describe('chart lines', () => {
  const line = (values: (number | null)[]) => ({ label: 'l', color: '#000', values });

  it('counts the lines with a point to draw', () => {
    expect(drawnLines([line([null, null]), line([1, null]), line([NaN])])).toBe(1);
    expect(drawnLines([])).toBe(0);
  });

  it('tells counts from measurements', () => {
    expect(integerValued([line([0, 3, null, 12])])).toBe(true);
    expect(integerValued([line([1, 2]), line([0.5])])).toBe(false);
    expect(integerValued([line([null])])).toBe(false);
  });
});
