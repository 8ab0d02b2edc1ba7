/** Timing shared by the benchmark cases: one warm-up run, then the median of `steps` runs. */

/** Median seconds of `steps` runs of `run`, after one untimed warm-up run. */
export async function medianSeconds(run: () => void | Promise<void>, steps: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i <= steps; i++) {
    const t0 = performance.now();
    await run();
    if (i > 0) times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
