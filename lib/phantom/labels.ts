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
