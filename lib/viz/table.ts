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
