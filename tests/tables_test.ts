/**
 * The comparison tables: hand-checked means, differences and orderings; pending rows; the long
 * format; the plans of runs behind Tables 5, 4 and B.1.
 */
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  comparisonTable,
  longRecords,
  type MeasuredRow,
  orderingHolds,
  subjectAverage,
  type TableSpec,
} from "../lib/tables.ts";
import { planArms, writeTables } from "../scripts/tables.ts";
import { dataFrame, parseCsv, toCsv } from "../lib/viz/table.ts";
import { join } from "node:path";

const subjects = (avg: number[]) => avg.map((a, i) => ({ id: `s${i}`, dice: [0.99, a - 0.1, a, a + 0.1] })); // tissue mean = a

function spec(rows: MeasuredRow[]): TableSpec {
  return { id: "t", title: "T", reference: "ref", protocol: "Protocol: test.", rows };
}

Deno.test("subject average: the mean of the three tissues in %, background excluded", () => {
  assertAlmostEquals(subjectAverage([1, 0.5, 0.7, 0.9]), 70, 1e-12);
});

Deno.test("comparison table: means ± sd, differences against the reference, the paper's ordering", () => {
  const rows: MeasuredRow[] = [
    {
      key: "ref",
      label: "full",
      source: "r",
      subjects: subjects([0.8, 0.7, 0.9, 0.8]),
      paper: { CSF: 80, GM: 90, WM: 85, average: 85 },
    },
    {
      key: "x",
      label: "ablated",
      source: "x",
      // 2, 1, 3 and 2 points lower: the paper's ordering (ablated lower) holds
      subjects: subjects([0.78, 0.69, 0.87, 0.78]),
      paper: { CSF: 79, GM: 89, WM: 84, average: 84 },
    },
    { key: "p", label: "pending", source: "", subjects: [], pending: "not built" },
  ];
  const df = comparisonTable(spec(rows));
  const cols = df.columns as string[];
  const values = df.values as (string | number)[][];
  const cell = (r: number, c: string) => values[r][cols.indexOf(c)];
  // averages 80, 70, 90, 80: mean 80, sd 8.165
  assertEquals(cell(0, "average"), "80.00 ± 8.16");
  assertEquals(cell(1, "average"), "78.00 ± 7.35");
  assertEquals(cell(0, "GM"), "80.00 ± 8.16");
  assertEquals(cell(1, "Δ average vs (ref)"), -2);
  const [lo, hi] = String(cell(1, "95% CI")).slice(1, -1).split(", ").map(Number);
  assert(lo >= -3 && lo < -2 && hi > -2 && hi <= -1, String(cell(1, "95% CI")));
  assertEquals(cell(1, "paper Δ average"), -1);
  // SciPy 1.10.1: ttest_rel p 0.01627660345942856; wilcoxon (approx, tied |d|) p 0.06559969214707187
  assertEquals(cell(1, "p (t-test)"), 0.0163);
  assertEquals(cell(1, "p (Wilcoxon)"), 0.0656);
  assertEquals(cell(1, "paper ordering holds"), "yes (not significant)");
  assertEquals(cell(0, "Δ average vs (ref)"), "reference");
  assertEquals(cell(2, "status"), "not measured: not built");
  assertEquals(cell(2, "average"), "");
  // long format: 4 subjects x 4 classes for each measured row
  assertEquals(longRecords(spec(rows)).length, 32);
});

Deno.test("ordering verdicts: sign agreement and significance", () => {
  assertEquals(orderingHolds(-1, -0.5, 0.01), "yes (p < 0.05)");
  assertEquals(orderingHolds(-1, 0.5, 0.01), "no (p < 0.05)");
  assertEquals(orderingHolds(2, 0.5, 0.3), "yes (not significant)");
  assertEquals(orderingHolds(NaN, 0.5, 0.3), "n/a");
});

Deno.test("plans: the AFM and KKN ablations reuse one host baseline; B.1 trains on syntheses", () => {
  const arms = planArms(["5", "4", "B1"], "rpnet");
  assertEquals(arms.map((a) => a.id), [
    "host",
    "afm-a",
    "afm-b",
    "afm-c",
    "afm-d",
    "kkn-a",
    "kkn-b",
    "image-level",
  ]);
  for (const a of arms.filter((a) => a.id.startsWith("afm-") || a.id.startsWith("kkn-"))) {
    const fromHost = a.copy.find((c) => c.from === "host");
    assert(
      fromHost?.names.includes("baseline-best") && fromHost.names.includes("baseline-matched-last"),
      a.id,
    );
    assertEquals(a.changes.fusion?.network, "rpnet");
  }
  // the KKN rows train their own KKN: only the teacher is copied from the source run
  assertEquals(arms.find((a) => a.id === "kkn-a")!.copy[0].names, ["teacher-fold1-best"]);
  assertEquals(arms.find((a) => a.id === "kkn-b")!.changes.keeper, { distillation: false });
  assertEquals(arms.find((a) => a.id === "image-level")!.changes.fusion, { input: "synthesized" });
  // a source that already trained the host with the full AFM gives its phase 3 to the host row
  const reuse = planArms(["5"], "unet3d", true)[0];
  assert(reuse.copy[0].names.includes("guided-best"));
  assert(!planArms(["5"], "unet3d", false)[0].copy[0].names.includes("guided-best"));
  // Table 1 trains only the decoder of row (d), on the source's KKN
  const t1 = planArms(["1"], "unet3d");
  assertEquals(t1.map((a) => [a.id, a.phase]), [["decoder", "decoder"]]);
  assertEquals(t1[0].copy, [{ from: "source", names: ["teacher-fold1-best", "keeper-fold1-best"] }]);
});

Deno.test("CSV: fields with commas, quotes or line breaks are quoted (RFC 4180); Python's csv reads them back", async () => {
  const csv = toCsv(
    dataFrame([{ a: "[0.1, 0.2]", b: 'say "hi"', c: 3.5 }, { a: "plain", b: "two\nlines", c: -1 }]),
  );
  assertEquals(csv, 'a,b,c\n"[0.1, 0.2]","say ""hi""",3.5\nplain,"two\nlines",-1\n');
  const py = new Deno.Command("python3", {
    args: ["-c", "import csv,sys,json; print(json.dumps(list(csv.reader(sys.stdin))))"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = py.stdin.getWriter();
  await w.write(new TextEncoder().encode(csv));
  await w.close();
  const rows = JSON.parse(new TextDecoder().decode((await py.output()).stdout));
  assertEquals(rows, [["a", "b", "c"], ["[0.1, 0.2]", 'say "hi"', "3.5"], ["plain", "two\nlines", "-1"]]);
  // and the project's own reader gives the same fields back, CRLF line ends included
  const back = [["a", "b", "c"], ...parseCsv(csv).map((r) => [r.a, r.b, r.c])];
  assertEquals(back, rows);
  assertEquals(parseCsv(csv.replace("3.5\n", "3.5\r\n"))[0].c, "3.5");
  assertThrows(() => parseCsv('a,b\n"open,1\n'), SyntaxError, "not closed");
  assertThrows(() => parseCsv("a,b\n1,2,3\n"), SyntaxError, "line 2: 3 fields");
});

Deno.test("writeTables: regenerating one table keeps the other tables' records in results.csv", async () => {
  const out = await Deno.makeTempDir();
  const spec = (id: string, v: number): TableSpec => ({
    id,
    title: id,
    reference: "a",
    protocol: "Protocol: test.",
    rows: ["a", "b"].map((key, k) => ({
      key,
      label: `row, ${key}`,
      source: "test",
      subjects: ["s1", "s2"].map((s, i) => ({ id: s, dice: [1, v + 0.1 * k, v + 0.01 * i, v] })),
    })),
  });
  await writeTables([spec("table1", 0.5), spec("table5", 0.6)], out);
  await writeTables([spec("table1", 0.7)], out);
  const rows = parseCsv(await Deno.readTextFile(join(out, "results.csv")));
  const of = (t: string) => rows.filter((r) => r.table === t);
  assertEquals(of("table5").length, 2 * 2 * 4);
  assertEquals(of("table1").length, 2 * 2 * 4);
  assert(
    of("table1").every((r) => r.measure === "dice background" || Number(r.value) >= 0.7),
    "table1 replaced",
  );
  assertEquals(of("table5").find((r) => r.measure === "dice WM")!.value, "0.6");
  assertEquals(of("table5")[0].method, "row, a");
  await Deno.remove(out, { recursive: true });
});
