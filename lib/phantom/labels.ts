/**
 * Label schemes of the phantom cohorts.
 *
 * Tissue (IBSR-like): 0 background, 1 CSF, 2 GM, 3 WM.
 *
 * Whole brain (MALC as remapped by QuickNAT: 27 structures + background). The order is the one
 * implied by the left/right pairs in the authors' code (1-3, 2-4, 5-18, 6-19, 7-20, 8-21, 9-22,
 * 10-23, 11-24, 15-25, 16-26, 17-27; midline 12, 13, 14).
 */

export const TISSUE_CLASSES = ["background", "CSF", "GM", "WM"] as const;

export const STRUCTURES = [
  "background",
  "Left-Cerebral-White-Matter",
  "Left-Cerebral-Cortex",
  "Right-Cerebral-White-Matter",
  "Right-Cerebral-Cortex",
  "Left-Lateral-Ventricle",
  "Left-Cerebellum-White-Matter",
  "Left-Cerebellum-Cortex",
  "Left-Thalamus",
  "Left-Caudate",
  "Left-Putamen",
  "Left-Pallidum",
  "3rd-Ventricle",
  "4th-Ventricle",
  "Brain-Stem",
  "Left-Hippocampus",
  "Left-Amygdala",
  "Left-VentralDC",
  "Right-Lateral-Ventricle",
  "Right-Cerebellum-White-Matter",
  "Right-Cerebellum-Cortex",
  "Right-Thalamus",
  "Right-Caudate",
  "Right-Putamen",
  "Right-Pallidum",
  "Right-Hippocampus",
  "Right-Amygdala",
  "Right-VentralDC",
] as const;

/**
 * MALC (MICCAI 2012 multi-atlas challenge, Neuromorphometrics labels) to `STRUCTURES`: for each
 * structure 1..27, the original label ids that become it; `"odd>=100"` / `"even>=100"` are the
 * cortical parcels (every id from 100 up: odd ones left, even ones right), as QuickNAT's remap
 * does. Every other id (CSF 46, inferior lateral ventricles 49/50, accumbens 23/30, vessels 63/64,
 * optic chiasm 69, vermal lobules 71-73, basal forebrain 75/76, ...) becomes background: the
 * paper's 27 are QuickNAT's 32 structures less those five.
 */
export const MALC_LABEL_IDS: Readonly<Record<number, readonly number[] | "odd>=100" | "even>=100">> = {
  1: [45], // Left-Cerebral-White-Matter
  2: "odd>=100", // Left-Cerebral-Cortex
  3: [44], // Right-Cerebral-White-Matter
  4: "even>=100", // Right-Cerebral-Cortex
  5: [52], // Left-Lateral-Ventricle
  6: [41], // Left-Cerebellum-White-Matter
  7: [39], // Left-Cerebellum-Cortex (Exterior)
  8: [60], // Left-Thalamus (Proper)
  9: [37], // Left-Caudate
  10: [58], // Left-Putamen
  11: [56], // Left-Pallidum
  12: [4], // 3rd-Ventricle
  13: [11], // 4th-Ventricle
  14: [35], // Brain-Stem
  15: [48], // Left-Hippocampus
  16: [32], // Left-Amygdala
  17: [62], // Left-VentralDC
  18: [51], // Right-Lateral-Ventricle
  19: [40], // Right-Cerebellum-White-Matter
  20: [38], // Right-Cerebellum-Cortex (Exterior)
  21: [59], // Right-Thalamus (Proper)
  22: [36], // Right-Caudate
  23: [57], // Right-Putamen
  24: [55], // Right-Pallidum
  25: [47], // Right-Hippocampus
  26: [31], // Right-Amygdala
  27: [61], // Right-VentralDC
};

/** The `STRUCTURES` index of a MALC label id, by `MALC_LABEL_IDS` (0 for every id it drops). */
export function malcToStructure(id: number): number {
  for (const [index, ids] of Object.entries(MALC_LABEL_IDS)) {
    if (
      ids === "odd>=100"
        ? id >= 100 && id % 2 === 1
        : ids === "even>=100"
        ? id >= 100 && id % 2 === 0
        : ids.includes(id)
    ) {
      return Number(index);
    }
  }
  return 0;
}

/** Index of a structure by name. */
export function structureIndex(name: (typeof STRUCTURES)[number]): number {
  return STRUCTURES.indexOf(name);
}

/** Structure pairs (left, right), as in the authors' three-view fusion. */
export const LEFT_RIGHT_PAIRS: [number, number][] = [
  [1, 3],
  [2, 4],
  [5, 18],
  [6, 19],
  [7, 20],
  [8, 21],
  [9, 22],
  [10, 23],
  [11, 24],
  [15, 25],
  [16, 26],
  [17, 27],
];

/**
 * Structures whose delineation in the phantom comes from geometric rules rather than from an
 * atlas label (see `data-prep/build_atlas.ts`); they are approximate.
 */
export const APPROXIMATE_STRUCTURES = [
  "Left-Lateral-Ventricle",
  "Right-Lateral-Ventricle",
  "3rd-Ventricle",
  "4th-Ventricle",
  "Brain-Stem",
  "Left-VentralDC",
  "Right-VentralDC",
  "Left-Cerebellum-White-Matter",
  "Right-Cerebellum-White-Matter",
] as const;

/**
 * Display colours of the 27 structures (background black): FreeSurfer's lookup-table colours
 * (`FreeSurferColorLUT.txt`) for the structures of the same name, so a label map reads as
 * FreeSurfer users expect.
 */
export const STRUCTURE_COLOURS: readonly (readonly [number, number, number])[] = [
  [0, 0, 0],
  [245, 245, 245], // Left-Cerebral-White-Matter
  [205, 62, 78], // Left-Cerebral-Cortex
  [245, 245, 245], // Right-Cerebral-White-Matter
  [205, 62, 78], // Right-Cerebral-Cortex
  [120, 18, 134], // Left-Lateral-Ventricle
  [220, 248, 164], // Left-Cerebellum-White-Matter
  [230, 148, 34], // Left-Cerebellum-Cortex
  [0, 118, 14], // Left-Thalamus
  [122, 186, 220], // Left-Caudate
  [236, 13, 176], // Left-Putamen
  [12, 48, 255], // Left-Pallidum
  [204, 182, 142], // 3rd-Ventricle
  [42, 204, 164], // 4th-Ventricle
  [119, 159, 176], // Brain-Stem
  [220, 216, 20], // Left-Hippocampus
  [103, 255, 255], // Left-Amygdala
  [165, 42, 42], // Left-VentralDC
  [120, 18, 134], // Right-Lateral-Ventricle
  [220, 248, 164], // Right-Cerebellum-White-Matter
  [230, 148, 34], // Right-Cerebellum-Cortex
  [0, 118, 14], // Right-Thalamus
  [122, 186, 220], // Right-Caudate
  [236, 13, 176], // Right-Putamen
  [13, 48, 255], // Right-Pallidum
  [220, 216, 20], // Right-Hippocampus
  [103, 255, 255], // Right-Amygdala
  [165, 42, 42], // Right-VentralDC
];

/** The paper's Table 3 groups (1-based structure indices): cortical (1)-(4), subcortical (5)-(27). */
export const CORTICAL = [1, 2, 3, 4] as const;
export const SUBCORTICAL = Array.from({ length: 23 }, (_, i) => i + 5);

/**
 * A label table as a FreeSurfer-style lookup table (`index name R G B A` per line, A = 0 as
 * FreeSurfer writes it), which FreeSurfer's Freeview, 3D Slicer and ITK-SNAP import.
 */
export function freeSurferLut(
  names: readonly string[],
  colours: readonly (readonly [number, number, number])[],
): string {
  const lines = [
    "#$Id: label table written by deno task segment",
    "#No. Label Name                    R   G   B   A",
  ];
  names.forEach((name, i) => {
    const [r, g, b] = colours[i];
    lines.push(
      `${String(i).padEnd(4)}${name.padEnd(32)}${String(r).padStart(3)} ${String(g).padStart(3)} ${
        String(b).padStart(3)
      }   0`,
    );
  });
  return lines.join("\n") + "\n";
}

/** The same table as JSON: `{ labels: [{ index, name, rgb }] }`. */
export function lutJson(
  names: readonly string[],
  colours: readonly (readonly [number, number, number])[],
): string {
  return JSON.stringify(
    { labels: names.map((name, index) => ({ index, name, rgb: [...colours[index]] })) },
    null,
    2,
  ) + "\n";
}
