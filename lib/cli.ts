/**
 * Small command-line option parser shared by the project's scripts: `--name value`,
 * `--name=value`, boolean `--flag`, positional arguments, and a generated `--help`.
 * Unknown options and bad values are errors that name the option.
 */

export interface OptionSpec {
  /** Long name without dashes. */
  name: string;
  description: string;
  /** "string" (default), "number", "integer" or "boolean". */
  type?: "string" | "number" | "integer" | "boolean";
  /** Allowed values for a string option. */
  choices?: readonly string[];
  default?: string | number | boolean;
  /** Environment variable used when the option is absent. */
  env?: string;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  options: OptionSpec[];
  /** Extra paragraphs for --help. */
  notes?: string[];
}

export class UsageError extends Error {
  override name = "UsageError";
}

export type ParsedArgs = {
  options: Record<string, string | number | boolean | undefined>;
  positional: string[];
  help: boolean;
  /** `--debug` (every command): show the stack trace of an unexpected error. */
  debug: boolean;
};

export function formatHelp(spec: CommandSpec): string {
  const lines = [`${spec.name}: ${spec.summary}`, "", `Usage: ${spec.usage}`, "", "Options:"];
  const leftOf = (o: OptionSpec) =>
    `  --${o.name}${o.type === "boolean" ? "" : " <" + (o.choices ? "name" : o.type ?? "value") + ">"}`;
  // the widest option with its value placeholder sets the description column
  const width = Math.max(...spec.options.map((o) => leftOf(o).length), "  --debug".length);
  for (const o of spec.options) {
    const left = leftOf(o);
    const extra = [
      o.choices ? `one of: ${o.choices.join(", ")}` : "",
      o.default !== undefined ? `default: ${o.default}` : "",
      o.env ? `env: ${o.env}` : "",
    ].filter(Boolean).join("; ");
    lines.push(`${left.padEnd(width + 2)}${o.description}${extra ? ` (${extra})` : ""}`);
  }
  lines.push(`${"  --help".padEnd(width + 2)}show this help`);
  lines.push(`${"  --debug".padEnd(width + 2)}show the stack trace of an unexpected error`);
  for (const n of spec.notes ?? []) lines.push("", n);
  return lines.join("\n");
}

export function parseArgs(spec: CommandSpec, argv: string[]): ParsedArgs {
  const byName = new Map(spec.options.map((o) => [o.name, o]));
  const options: ParsedArgs["options"] = {};
  const positional: string[] = [];
  let help = false, debug = false;
  for (let n = 0; n < argv.length; n++) {
    const arg = argv[n];
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (arg === "--debug") {
      debug = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec1 = byName.get(name);
    if (!spec1) throw new UsageError(`unknown option --${name} (see --help)`);
    if (spec1.type === "boolean") {
      options[name] = eq < 0 ? true : !["false", "0", "no"].includes(arg.slice(eq + 1));
      continue;
    }
    const raw = eq >= 0 ? arg.slice(eq + 1) : argv[++n];
    if (raw === undefined) throw new UsageError(`option --${name} needs a value`);
    options[name] = convert(spec1, raw, `--${name}`);
  }
  for (const o of spec.options) {
    if (options[o.name] !== undefined) continue;
    const envValue = o.env ? Deno.env.get(o.env) : undefined;
    if (envValue !== undefined && envValue !== "") options[o.name] = convert(o, envValue, o.env!);
    else options[o.name] = o.default;
  }
  return { options, positional, help, debug };
}

function convert(o: OptionSpec, raw: string, where: string): string | number | boolean {
  if (o.type === "number" || o.type === "integer") {
    const v = Number(raw);
    if (!Number.isFinite(v) || (o.type === "integer" && !Number.isInteger(v))) {
      throw new UsageError(`${where}: "${raw}" is not ${o.type === "integer" ? "an integer" : "a number"}`);
    }
    return v;
  }
  if (o.choices && !o.choices.includes(raw)) {
    throw new UsageError(`${where}: "${raw}" is not one of ${o.choices.join(", ")}`);
  }
  return raw;
}

/**
 * Errors that describe bad input rather than a defect (a missing or damaged volume, a backend
 * that cannot start): shown as one line without a stack trace, exit code 1.
 */
const INPUT_ERRORS = new Set([
  "VolumeError",
  "VolumeNotFoundError",
  "CorruptVolumeError",
  "NotNiftiError",
  "UnsupportedDatatypeError",
  "DimensionError",
  "GridMismatchError",
  "BackendError",
  "ConvergenceError",
  "DivergenceError",
  "CohortError",
]);

/**
 * Runs a command's `main` with parsed arguments: prints `--help` and exits 0, rejects
 * positional arguments unless `allowPositional`, and turns a `UsageError` into one line on
 * stderr naming the command, with exit code 64 (input errors: one line, exit code 1).
 */
export async function runCommand(
  spec: CommandSpec,
  main: (args: ParsedArgs) => Promise<void> | void,
  { argv = Deno.args, allowPositional = false }: { argv?: string[]; allowPositional?: boolean } = {},
): Promise<void> {
  const debug = argv.includes("--debug");
  try {
    const args = parseArgs(spec, argv);
    if (args.help) {
      console.log(formatHelp(spec));
      Deno.exit(0);
    }
    if (!allowPositional && args.positional.length) {
      throw new UsageError(`unexpected argument "${args.positional[0]}" (see --help)`);
    }
    await main(args);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${spec.name}: ${err.message}`);
      Deno.exit(64);
    }
    if (err instanceof Error && INPUT_ERRORS.has(err.name)) {
      console.error(`${spec.name}: ${err.name}: ${err.message}`);
      Deno.exit(1);
    }
    if (debug) throw err;
    // anything else (a full disk, a damaged run folder, a defect): one line; --debug for the trace
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    console.error(`${spec.name}: ${message.split("\n")[0]} (run again with --debug for the stack trace)`);
    Deno.exit(1);
  }
}
