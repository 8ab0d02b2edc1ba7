/**
 * Reading the JSON files a run folder or cohort holds (configurations, metrics, manifests, logs):
 * a missing, unreadable, truncated or otherwise invalid file is named, never a bare parser error.
 */

/** A file that is missing, unreadable or not the JSON it should be. */
export class DamagedFileError extends Error {
  override name = "DamagedFileError";
  constructor(readonly file: string, problem: string) {
    super(`${file}: ${problem}`);
  }
}

/** Reads a text file, naming it (and `what` it is) when it is missing or unreadable. */
async function readText(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "missing" : (err as Error).message;
    throw new DamagedFileError(path, `${what} cannot be read (${reason})`);
  }
}

/** Reads and parses a JSON file; `what` says what the file is, for the message. */
export async function readJsonFile<T = unknown>(path: string, what: string): Promise<T> {
  return parseJson<T>(path, await readText(path, what), what);
}

/** Parses JSON text read from `path`, naming the file when it is invalid. */
export function parseJson<T = unknown>(path: string, text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new DamagedFileError(
      path,
      `${what} is not valid JSON (${(err as Error).message}): damaged or truncated`,
    );
  }
}

/** Reads a JSON-lines file (one object a line), naming the file and line of an invalid one. */
export async function readJsonLines<T = unknown>(path: string, what: string): Promise<T[]> {
  const text = await readText(path, what);
  return text.split("\n").filter((l) => l.trim()).map((l, i) => parseJson<T>(`${path}:${i + 1}`, l, what));
}
