/**
 * Result tables as danfojs DataFrames, shown in notebooks as HTML tables and written as CSV and
 * Markdown by `deno task figures`.
 */
import * as dfd from "danfojs";

export type Row = Record<string, string | number>;

/** A DataFrame of rows; its columns are every row's keys in order of appearance (missing cells: ""). */
export function dataFrame(rows: Row[]): dfd.DataFrame {
  if (!rows.length) throw new Error("dataFrame: no rows");
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return new dfd.DataFrame(rows.map((r) => columns.map((c) => r[c] ?? "")), { columns });
}

function cell(v: unknown, digits: number): string {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : String(v);
}

function escapeHtml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** An HTML table of a DataFrame (what notebooks display). */
export function toHtml(df: dfd.DataFrame, digits = 4): string {
  const head = df.columns.map((c) => `<th>${escapeHtml(String(c))}</th>`).join("");
  const body = (df.values as unknown[][]).map((r) =>
    `<tr>${r.map((v) => `<td style="text-align:right">${escapeHtml(cell(v, digits))}</td>`).join("")}</tr>`
  ).join("\n");
  return `<table class="dataframe" border="1"><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/** A GitHub-flavoured Markdown table. */
export function toMarkdown(df: dfd.DataFrame, digits = 4): string {
  const cols = df.columns.map(String);
  const lines = [`| ${cols.join(" | ")} |`, `| ${cols.map(() => "---").join(" | ")} |`];
  for (const r of df.values as unknown[][]) lines.push(`| ${r.map((v) => cell(v, digits)).join(" | ")} |`);
  return lines.join("\n") + "\n";
}

/**
 * CSV (RFC 4180): a field holding a comma, a double quote or a line break is quoted, its quotes
 * doubled. (danfojs's `toCSV` writes such fields bare, which splits "[0.1, 0.2]" into two columns.)
 */
export function toCsv(df: dfd.DataFrame): string {
  const field = (v: unknown) => {
    const t = String(v ?? "");
    return /[",\r\n]/.test(t) ? `"${t.replaceAll('"', '""')}"` : t;
  };
  const lines = [df.columns.map(field).join(",")];
  for (const r of df.values as unknown[][]) lines.push(r.map(field).join(","));
  return lines.join("\n") + "\n";
}

/**
 * Rows of a CSV file as `toCsv` writes it (RFC 4180: quoted fields may hold commas, doubled quotes
 * and line breaks); the first line names the columns. Numbers stay strings: the caller knows
 * which columns are numeric. A row with a different field count than the header is an error.
 */
export function parseCsv(text: string): Record<string, string>[] {
  const records: string[][] = [];
  let row: string[] = [], field = "", quoted = false, i = 0;
  const endField = () => (row.push(field), field = "");
  while (i < text.length) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') (field += '"', i++);
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"' && field === "") quoted = true;
    else if (ch === ",") endField();
    else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      endField();
      records.push(row);
      row = [];
    } else field += ch;
    i++;
  }
  if (quoted) throw new SyntaxError("CSV: a quoted field is not closed");
  if (field !== "" || row.length) (endField(), records.push(row));
  const [header, ...body] = records;
  if (!header) return [];
  return body.map((r, n) => {
    if (r.length !== header.length) {
      throw new SyntaxError(`CSV line ${n + 2}: ${r.length} fields, the header has ${header.length}`);
    }
    return Object.fromEntries(header.map((h, k) => [h, r[k]]));
  });
}
