/** Peak resident memory of this process in MiB (Linux VmHWM), NaN where /proc is unavailable. */
export function peakRssMiB(): number {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}
