/**
 * MR physics of the phantom: tissue relaxation properties at 1.5T, 3T and 7T, the signal of
 * magnetisation-prepared rapid gradient-echo sequences (MPRAGE, MP2RAGE) by Bloch simulation of
 * the longitudinal magnetisation, field-dependent SNR, and bias fields.
 *
 * Literature values are rounded; the sources are cited beside each table. Where a source gives
 * ranges across studies, a representative value is used.
 */

export type Field = "1.5T" | "3T" | "7T";
export const FIELD_TESLA: Record<Field, number> = { "1.5T": 1.5, "3T": 3, "7T": 7 };

/** Tissue classes with their own relaxation properties (grey-matter nuclei carry iron). */
export const PHYSICS_CLASSES = ["csf", "gm", "wm", "caudate", "putamen", "pallidum", "thalamus"] as const;
export type PhysicsClass = (typeof PHYSICS_CLASSES)[number];

export interface TissueProperties {
  /** Longitudinal relaxation time, ms. */
  t1: number;
  /** Effective transverse relaxation time, ms. */
  t2s: number;
  /** Proton density relative to CSF. */
  pd: number;
}

/**
 * T1 (ms). Cortex, WM, CSF: Rooney et al., Magn Reson Med 57:308-318 (2007), Table 1 (1.5T, 3T,
 * 7T). Deep grey matter: Wansapura et al., J Magn Reson Imaging 9:531-538 (1999) at 3T; Wright
 * et al., MAGMA 21:121-130 (2008) at 7T; 1.5T scaled from 3T by Rooney's GM ratio. Pallidum and
 * thalamus are shorter than cortex (myelin, iron).
 */
const T1: Record<Field, Record<PhysicsClass, number>> = {
  "1.5T": { csf: 4070, gm: 1200, wm: 660, caudate: 1100, putamen: 1050, pallidum: 750, thalamus: 900 },
  "3T": { csf: 4160, gm: 1610, wm: 840, caudate: 1400, putamen: 1330, pallidum: 1000, thalamus: 1200 },
  "7T": { csf: 4430, gm: 1940, wm: 1130, caudate: 1680, putamen: 1700, pallidum: 1300, thalamus: 1500 },
};

/**
 * T2* (ms). 1.5T and 3T cortex/WM: Wansapura et al. (1999) (3T: GM 66, WM 53) and their 1.5T
 * comparison; 7T: Peters et al., Magn Reson Imaging 25:748-753 (2007) (GM 33, WM 27, caudate 20,
 * putamen 17, pallidum 12). Iron-rich nuclei shorten with field (R2* linear in B0: Yao et al.,
 * NeuroImage 44:1259-1266, 2009). CSF: long at every field.
 */
const T2S: Record<Field, Record<PhysicsClass, number>> = {
  "1.5T": { csf: 1000, gm: 84, wm: 72, caudate: 70, putamen: 60, pallidum: 45, thalamus: 66 },
  "3T": { csf: 600, gm: 66, wm: 53, caudate: 46, putamen: 38, pallidum: 26, thalamus: 45 },
  "7T": { csf: 300, gm: 33, wm: 27, caudate: 20, putamen: 17, pallidum: 12, thalamus: 22 },
};

/**
 * Proton density (water content relative to CSF), field independent: GM about 0.80, WM about
 * 0.69 (Abbas et al., NeuroImage 106:404-413, 2015; Volz et al., NeuroImage 63:540-552, 2012).
 */
const PD: Record<PhysicsClass, number> = {
  csf: 1,
  gm: 0.8,
  wm: 0.69,
  caudate: 0.82,
  putamen: 0.8,
  pallidum: 0.72,
  thalamus: 0.75,
};

export function tissueProperties(field: Field, cls: PhysicsClass): TissueProperties {
  return { t1: T1[field][cls], t2s: T2S[field][cls], pd: PD[cls] };
}

/** A magnetisation-prepared rapid gradient-echo sequence (one inversion, one or two readout blocks). */
export interface MPSequence {
  name: string;
  field: Field;
  /** Time between inversions, ms. */
  tr: number;
  /** Inversion times to the centre of each readout block, ms. */
  ti: number[];
  /** Readout flip angle of each block, degrees. */
  flip: number[];
  /** Echo time, ms. */
  te: number;
  /** Readout pulses per block and their spacing (ms); k-space centre at the block's middle. */
  readouts: number;
  echoSpacing: number;
  /** Adiabatic inversion efficiency. */
  inversionEfficiency: number;
  /** Nominal voxel size of the paper's protocol, mm. */
  voxel: number;
}

/**
 * The paper's 3T MPRAGE (TR 1900, TE 2.16, TI 900 ms, flip 9 deg, 1 mm). Readout train length
 * and echo spacing are not given; 176 partitions at 7 ms are typical of this protocol family.
 */
export const MPRAGE_3T: MPSequence = {
  name: "MPRAGE",
  field: "3T",
  tr: 1900,
  ti: [900],
  flip: [9],
  te: 2.16,
  readouts: 176,
  echoSpacing: 7,
  inversionEfficiency: 0.96,
  voxel: 1,
};

/**
 * The paper's 7T MP2RAGE (TR 6000, TE 2.95, TI 800/2700 ms, flips 4/4 deg, 0.65 mm); readout
 * train of 160 at 7 ms assumed (Marques et al., NeuroImage 49:1271-1281, 2010, use similar).
 */
export const MP2RAGE_7T: MPSequence = {
  name: "MP2RAGE",
  field: "7T",
  tr: 6000,
  ti: [800, 2700],
  flip: [4, 4],
  te: 2.95,
  readouts: 160,
  echoSpacing: 7,
  inversionEfficiency: 0.96,
  voxel: 0.65,
};

/**
 * A 1.5T T1-weighted MPRAGE standing in for the IBSR and MALC scans (both 1.5T): the ADNI 1.5T
 * protocol (TR 2400, TE 3.6, TI 1000 ms, flip 8 deg, about 1.2 mm; Jack et al., J Magn Reson
 * Imaging 27:685-691, 2008), at 1 mm here.
 */
export const MPRAGE_15T: MPSequence = {
  name: "MPRAGE",
  field: "1.5T",
  tr: 2400,
  ti: [1000],
  flip: [8],
  te: 3.6,
  readouts: 160,
  echoSpacing: 8.5,
  inversionEfficiency: 0.96,
  voxel: 1,
};

/**
 * Longitudinal magnetisation (M0 = 1) at the k-space centre of each readout block in the
 * steady state, by stepping the Bloch equations for Mz through repeated inversions. `b1` scales
 * the nominal flip angles (transmit field inhomogeneity).
 */
export function mpBlockMz(seq: MPSequence, t1: number, b1 = 1): number[] {
  const half = (seq.readouts / 2) * seq.echoSpacing;
  const starts = seq.ti.map((ti) => ti - half);
  starts.forEach((s, b) => {
    const prevEnd = b === 0 ? 0 : starts[b - 1] + seq.readouts * seq.echoSpacing;
    if (s < prevEnd) throw new RangeError(`${seq.name}: readout block ${b + 1} overlaps the previous event`);
  });
  if (starts[starts.length - 1] + seq.readouts * seq.echoSpacing > seq.tr) {
    throw new RangeError(`${seq.name}: readouts do not fit in TR ${seq.tr} ms`);
  }
  const relax = (mz: number, dt: number) => 1 - (1 - mz) * Math.exp(-dt / t1);
  let mz = 1;
  let centre: number[] = [];
  for (let shot = 0; shot < 30; shot++) {
    mz = -seq.inversionEfficiency * mz;
    let t = 0;
    centre = [];
    for (let b = 0; b < seq.ti.length; b++) {
      mz = relax(mz, starts[b] - t);
      t = starts[b];
      const a = (seq.flip[b] * b1 * Math.PI) / 180;
      for (let p = 0; p < seq.readouts; p++) {
        if (p === seq.readouts >> 1) centre.push(mz);
        mz *= Math.cos(a);
        mz = relax(mz, seq.echoSpacing);
        t += seq.echoSpacing;
      }
    }
    mz = relax(mz, seq.tr - t);
  }
  return centre;
}

/**
 * Complex-free signal of each readout block: `PD * exp(-TE/T2*) * sin(flip * b1) * Mz`.
 * (Receive sensitivity multiplies this outside.)
 */
export function mpSignals(seq: MPSequence, p: TissueProperties, b1 = 1): number[] {
  return mpBlockMz(seq, p.t1, b1).map((mz, b) =>
    p.pd * Math.exp(-seq.te / p.t2s) * Math.sin((seq.flip[b] * b1 * Math.PI) / 180) * mz
  );
}

/**
 * The MP2RAGE uniform image from two complex signals: `Re(S1 conj(S2)) / (|S1|^2 + |S2|^2)`, in
 * [-0.5, 0.5] (Marques et al. 2010, Eq. 3). Free of receive bias, PD and T2*.
 */
export function mp2rageUni(s1re: number, s1im: number, s2re: number, s2im: number): number {
  const den = s1re * s1re + s1im * s1im + s2re * s2re + s2im * s2im;
  return den > 0 ? (s1re * s2re + s1im * s2im) / den : 0;
}

/**
 * SNR of a sequence's white matter at its nominal voxel, relative to a reference of `snr3T1mm`
 * at 3T and 1 mm^3: SNR grows as B0^1.65 (Pohmann et al., Magn Reson Med 75:801-809, 2016) and
 * linearly with voxel volume.
 */
export function nominalSnr(field: Field, voxelMm: number, snr3T1mm = 40): number {
  return snr3T1mm * (FIELD_TESLA[field] / 3) ** 1.65 * voxelMm ** 3;
}

/**
 * SNR of a sequence acquired at `acquiredMm` instead of its nominal `voxelMm` over the same field
 * of view and readout bandwidth per voxel: SNR is proportional to voxel volume times the square
 * root of the total sampling time, and the sampling time is proportional to the number of voxels,
 * so SNR scales as sqrt(voxel volume) (Haacke et al., Magnetic Resonance Imaging, 1999, ch. 15):
 * the same as block-averaging the nominal image down to the coarser grid.
 */
export function acquisitionSnr(field: Field, voxelMm: number, acquiredMm: number, snr3T1mm = 40): number {
  return nominalSnr(field, voxelMm, snr3T1mm) * (acquiredMm / voxelMm) ** 1.5;
}

/**
 * Transmit-field (B1+) scale at a distance `r` mm from the head centre: centre-bright at 7T
 * (about 1.2 at the centre, 0.8 at 100 mm; cf. Vaughan et al., Magn Reson Med 46:24-30, 2001),
 * mild at 3T, nearly flat at 1.5T. `tilt` adds a seeded left-right/anterior-posterior gradient.
 */
export function transmitScale(field: Field, r: number): number {
  const amp = { "1.5T": 0.03, "3T": 0.12, "7T": 0.55 }[field];
  const base = { "1.5T": 0.985, "3T": 0.94, "7T": 0.65 }[field];
  return base + amp * Math.exp(-(r * r) / (2 * 60 * 60));
}

/** Peak-to-peak amplitude (as a log-gain) of the smooth random receive field at each field strength. */
export const RECEIVE_BIAS_AMPLITUDE: Record<Field, number> = { "1.5T": 0.05, "3T": 0.1, "7T": 0.25 };

/**
 * Non-brain head tissue of the full-head phantom (`lib/phantom/head.ts`), at 1.5T and 3T only
 * (the full-head cohort stands for the low-field scans a user brings; no value is invented for 7T):
 * - `fat` (scalp and orbital fat, diploic marrow): T1 288 ms at 1.5T and 371 ms at 3T,
 *   subcutaneous fat (Gold et al., AJR 183:343-351, 2004); PD 0.9. Chemical shift is not modelled.
 * - `muscle` (temporal and neck muscle, skin, glands): T1 1008 ms at 1.5T and 1412 ms at 3T
 *   (Stanisz et al., Magn Reson Med 54:507-512, 2005); PD 0.72. T2* below Stanisz's T2 (44 and
 *   50 ms): 30 and 25 ms.
 * - `bone` (cortical bone, and the sinuses' air that cannot be told from it on a T1 image): T2*
 *   about 0.4 ms (Du and Bydder, NMR Biomed 26:489-506, 2013), so no signal at these echo times;
 *   PD 0.2, T1 250 ms.
 */
export const HEAD_CLASSES = ["fat", "muscle", "bone"] as const;
export type HeadClass = (typeof HEAD_CLASSES)[number];

const HEAD_T1: Record<"1.5T" | "3T", Record<HeadClass, number>> = {
  "1.5T": { fat: 288, muscle: 1008, bone: 250 },
  "3T": { fat: 371, muscle: 1412, bone: 250 },
};
const HEAD_T2S: Record<"1.5T" | "3T", Record<HeadClass, number>> = {
  "1.5T": { fat: 40, muscle: 30, bone: 0.4 },
  "3T": { fat: 30, muscle: 25, bone: 0.4 },
};
const HEAD_PD: Record<HeadClass, number> = { fat: 0.9, muscle: 0.72, bone: 0.2 };

export function headTissueProperties(field: Field, cls: HeadClass): TissueProperties {
  if (field === "7T") {
    throw new RangeError("the full-head phantom has non-brain tissue properties at 1.5T and 3T only");
  }
  return { t1: HEAD_T1[field][cls], t2s: HEAD_T2S[field][cls], pd: HEAD_PD[cls] };
}
