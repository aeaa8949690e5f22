import { describe, expect, it } from 'vitest';
import { SpeedMeter, formatBytes, formatCount, formatDuration, formatMetric } from '../../src/ui/lib/format.ts';
import { estimateEta } from '../../src/engine/train/eta.ts';

describe('formatBytes', () => {
  it('uses decimal units like the Hub', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1500)).toBe('1.50 kB');
    expect(formatBytes(269_060_552)).toBe('269 MB');
    expect(formatBytes(2_471_645_608)).toBe('2.47 GB');
    expect(formatBytes(-1)).toBe('–');
  });
});

describe('formatDuration', () => {
  it('reads as seconds, minutes or hours', () => {
    expect(formatDuration(42.4)).toBe('42 s');
    expect(formatDuration(185)).toBe('3 min 05 s');
    expect(formatDuration(7260)).toBe('2 h 01 min');
    expect(formatDuration(Number.NaN)).toBe('–');
  });
});

describe('formatCount and formatMetric', () => {
  it('shortens parameter counts', () => {
    expect(formatCount(134_515_008)).toBe('135M');
    expect(formatCount(1_235_814_400)).toBe('1.24B');
    expect(formatCount(260_000)).toBe('260K');
    expect(formatCount(12)).toBe('12');
  });
  it('shows metrics with four significant digits and small ones in exponent form', () => {
    expect(formatMetric(2.345678)).toBe('2.346');
    expect(formatMetric(0.0002)).toBe('2.00e-4');
    expect(formatMetric(null)).toBe('–');
    expect(formatMetric(Number.NaN)).toBe('–');
    expect(formatMetric(Infinity)).toBe('∞');
  });
});

describe('estimateEta', () => {
  it('extrapolates the pace since the run (or its resume) began', () => {
    // 10 steps in 20 s from step 5: 2 s per step, 85 steps left.
    expect(estimateEta(5, 1000, 15, 21_000, 100)).toBeCloseTo(170);
  });
  it('has no estimate before the first step is done', () => {
    expect(estimateEta(5, 1000, 5, 2000, 100)).toBeNull();
    expect(estimateEta(0, 1000, 3, 1000, 100)).toBeNull();
  });
  it('is zero at the end', () => {
    expect(estimateEta(0, 0, 100, 50_000, 100)).toBe(0);
  });
});

describe('SpeedMeter', () => {
  it('measures bytes per second over a sliding window', () => {
    const m = new SpeedMeter(1000);
    expect(m.add(0, 0)).toBe(0);
    expect(m.add(500, 1_000_000)).toBeCloseTo(2_000_000);
    expect(m.add(1000, 2_000_000)).toBeCloseTo(2_000_000);
    // After a stall the old samples leave the window and the speed drops.
    m.add(3000, 2_000_000);
    expect(m.add(3500, 2_000_000)).toBe(0);
  });
});
