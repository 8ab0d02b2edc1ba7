/**
 * Training steps per second of each phase of finished runs, from their `log.jsonl`: for every
 * phase, the steps between its first and last logged validation over the wall time between them
 * (so validation is included, as in the run's own wall time). With two runs, the second's rate
 * against the first's.
 *
 *   deno run -A bench/phase_rates.ts runs/<before> [runs/<after>]
 */
import { join } from "node:path";

interface Entry {
  time?: string;
  phase?: string;
  steps?: number;
}

export interface PhaseRate {
  phase: string;
  steps: number;
  seconds: number;
  stepsPerSecond: number;
}

/** Steps per second of each phase of the run folder `dir`, in the order the phases ran. */
export async function phaseRates(dir: string): Promise<PhaseRate[]> {
  const path = join(dir, "log.jsonl");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`${path}: cannot read the run's log (${(err as Error).message})`);
  }
  const byPhase = new Map<string, { t: number; steps: number }[]>();
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let e: Entry;
    try {
      e = JSON.parse(line);
    } catch {
      throw new Error(`${path}: line ${i + 1} is not JSON`);
    }
    if (typeof e.steps !== "number" || !e.phase || !e.time) return;
    const list = byPhase.get(e.phase) ?? [];
    list.push({ t: Date.parse(e.time) / 1000, steps: e.steps });
    byPhase.set(e.phase, list);
  });
  const out: PhaseRate[] = [];
  for (const [phase, list] of byPhase) {
    if (list.length < 2) continue;
    const first = list[0], last = list[list.length - 1];
    const steps = last.steps - first.steps, seconds = last.t - first.t;
    if (steps > 0 && seconds > 0) out.push({ phase, steps, seconds, stepsPerSecond: steps / seconds });
  }
  return out;
}

if (import.meta.main) {
  const [before, after] = Deno.args;
  if (!before) {
    console.error("usage: deno run -A bench/phase_rates.ts runs/<before> [runs/<after>]");
    Deno.exit(2);
  }
  let a: PhaseRate[], b: Map<string, PhaseRate> | null;
  try {
    a = await phaseRates(before);
    b = after ? new Map((await phaseRates(after)).map((r) => [r.phase, r])) : null;
  } catch (err) {
    console.error(`phase_rates: ${(err as Error).message}`);
    Deno.exit(1);
  }
  for (const r of a) {
    const other = b?.get(r.phase);
    const cols = [r.phase.padEnd(36), `${r.stepsPerSecond.toFixed(2)} steps/s`];
    if (other) {
      cols.push(
        `${other.stepsPerSecond.toFixed(2)} steps/s`,
        `${(other.stepsPerSecond / r.stepsPerSecond).toFixed(2)}x`,
      );
    }
    console.log(cols.join("  "));
  }
}
