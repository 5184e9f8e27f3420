//! Latitude/longitude to H3 cell, the same cell h3o computes, about 5x cheaper.
//!
//! h3o projects a point onto its icosahedron face with trigonometry (acos, tan, atan2,
//! sin/cos: ~140 ns) and builds the index digit by digit with floating-point rounding
//! (~230 ns). Here the gnomonic projection is three dot products and a division (the face's
//! tangent axes are precomputed), and the digits come from integer arithmetic. Where a point
//! lies within `MARGIN` hex units of a decision (closest face, hex rounding) — where the two
//! computations' last-bit differences could choose differently — or its base cell is a
//! pentagon, the cell is h3o's own. `tests` compare against h3o on millions of points.

use crate::base_cells::FACE_IJK_BASE_CELLS;
use h3o::{BaseCell, LatLng, Resolution};

/// Icosahedron face centres on the unit sphere (H3's `faceCenterPoint`, as in h3o).
#[rustfmt::skip]
const CENTER: [[f64; 3]; 20] = [
    [ 0.2199307791404606,  0.6583691780274996,  0.7198475378926182],
    [-0.2139234834501421,  0.1478171829550703,  0.9656017935214205],
    [ 0.1092625278784797, -0.481195157287321,   0.8697775121287253],
    [ 0.7428567301586791, -0.3593941678278028,  0.5648005936517033],
    [ 0.8112534709140969,  0.3448953237639384,  0.472138773641393],
    [-0.1055498149613921,  0.9794457296411413,  0.1718874610009365],
    [-0.8075407579970092,  0.1533552485898818,  0.5695261994882688],
    [-0.2846148069787907, -0.8644080972654206,  0.4144792552473539],
    [ 0.7405621473854482, -0.6673299564565524, -0.0789837646326737],
    [ 0.8512303986474293,  0.4722343788582681, -0.2289137388687808],
    [-0.7405621473854481,  0.6673299564565524,  0.0789837646326737],
    [-0.8512303986474292, -0.4722343788582682,  0.2289137388687808],
    [ 0.1055498149613919, -0.9794457296411413, -0.1718874610009365],
    [ 0.8075407579970092, -0.1533552485898819, -0.5695261994882688],
    [ 0.2846148069787908,  0.8644080972654204, -0.4144792552473539],
    [-0.7428567301586791,  0.3593941678278027, -0.5648005936517033],
    [-0.811253470914097,  -0.3448953237639382, -0.472138773641393],
    [-0.2199307791404607, -0.6583691780274996, -0.7198475378926182],
    [ 0.213923483450142,  -0.1478171829550704, -0.9656017935214205],
    [-0.1092625278784796,  0.481195157287321,  -0.8697775121287253],
];

/// Azimuth (radians) from each face centre to its Class II i-axis (H3's `faceAxesAzRadsCII`).
#[rustfmt::skip]
const AXES_AZ_RADS_CII: [f64; 20] = [
    5.6199582685239395, 5.7603390817141875, 0.78021365439343, 0.4304693639799999,
    6.130269123335111, 2.692877706530643, 2.982963003477244, 3.532912002790141,
    3.494305004259568, 3.0032141694995382, 5.930472956509812, 0.13837848409025486,
    0.4487149470591504, 0.15862965011254937, 5.891865957979238, 2.711123289609793,
    3.294508837434268, 3.80481969224544, 3.6644388790551923, 2.361378999196363,
];

const INV_RES0_U_GNOMONIC: f64 = 2.618033988749896;
const AP7_ROT_RADS: f64 = 0.3334731722518321;
const RSIN60: f64 = 1.1547005383792515;
/// How close (hex units at the target resolution) to a rounding decision we defer to h3o.
/// The two projections agree to ~1e-10 units at resolution 15; this leaves a wide margin.
const MARGIN: f64 = 1e-7;
/// How close (squared chord) two faces may be before the closest one is h3o's to choose.
const FACE_MARGIN: f64 = 1e-12;

/// One face's projection: centre `c`, and the Class II / Class III hex axes `u`, `v` in the
/// tangent plane, so that hex2d = scale · (p·u, p·v) / (p·c).
#[derive(Clone, Copy)]
struct FaceAxes {
    c: [f64; 3],
    u: [[f64; 3]; 2],
    v: [[f64; 3]; 2],
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Precomputed projections for the 20 faces and the resolution scales.
pub struct Projector {
    faces: [FaceAxes; 20],
    scale: [f64; 16],
}

impl Default for Projector {
    fn default() -> Self {
        Self::new()
    }
}

impl Projector {
    pub fn new() -> Self {
        let mut faces = [FaceAxes {
            c: [0.0; 3],
            u: [[0.0; 3]; 2],
            v: [[0.0; 3]; 2],
        }; 20];
        for (f, axes) in faces.iter_mut().enumerate() {
            let c = CENTER[f];
            // north: the pole's component orthogonal to c; east = north × c (h3o's tangent basis)
            let mut north = [-c[2] * c[0], -c[2] * c[1], 1.0 - c[2] * c[2]];
            let n = dot(&north, &north).sqrt();
            north = [north[0] / n, north[1] / n, north[2] / n];
            let east = [
                north[1] * c[2] - north[2] * c[1],
                north[2] * c[0] - north[0] * c[2],
                north[0] * c[1] - north[1] * c[0],
            ];
            // theta = A - azimuth; x = r cos(theta), y = r sin(theta), with
            // r cos(az) = p·north / p·c and r sin(az) = p·east / p·c (gnomonic: r = tan of the arc)
            for (class, a) in [AXES_AZ_RADS_CII[f], AXES_AZ_RADS_CII[f] - AP7_ROT_RADS]
                .into_iter()
                .enumerate()
            {
                let (sa, ca) = a.sin_cos();
                axes.u[class] = [0, 1, 2].map(|k| ca * north[k] + sa * east[k]);
                axes.v[class] = [0, 1, 2].map(|k| sa * north[k] - ca * east[k]);
            }
            axes.c = c;
        }
        let mut scale = [0.0; 16];
        for (res, s) in scale.iter_mut().enumerate() {
            *s = INV_RES0_U_GNOMONIC * 7f64.sqrt().powi(res as i32);
        }
        Self { faces, scale }
    }

    /// The H3 cell (as its 64-bit index) holding (lat, lng) degrees at resolution `res`.
    /// Coordinates must be finite; `res` in 0..=15.
    pub fn cell(&self, lat_deg: f64, lng_deg: f64, res: u8) -> u64 {
        match self.fast_cell(lat_deg, lng_deg, res) {
            Some(cell) => cell,
            None => reference_cell(lat_deg, lng_deg, res),
        }
    }

    /// The cells of many points at `res`, the digit loops of `LANES` points run side by side
    /// (each point's loop is a chain of dependent steps; several chains keep the core busy).
    pub fn cells(&self, lat: &[f64], lng: &[f64], res: u8) -> Vec<u64> {
        assert_eq!(lat.len(), lng.len(), "lat and lng differ in length");
        let mut out = vec![0u64; lat.len()];
        for (start, chunk) in out
            .chunks_mut(LANES)
            .enumerate()
            .map(|(c, o)| (c * LANES, o))
        {
            let mut face = [usize::MAX; LANES];
            let (mut a, mut b) = ([0i32; LANES], [0i32; LANES]);
            for l in 0..chunk.len() {
                if let Some((f, pa, pb)) = self.project(lat[start + l], lng[start + l], res) {
                    (face[l], a[l], b[l]) = (f, pa, pb);
                }
            }
            let bits = digits_lanes(&mut a, &mut b, res);
            for (l, cell) in chunk.iter_mut().enumerate() {
                let fast = if face[l] == usize::MAX {
                    None
                } else {
                    finish(face[l], bits[l], a[l], b[l], res)
                };
                *cell = fast.unwrap_or_else(|| reference_cell(lat[start + l], lng[start + l], res));
            }
        }
        out
    }

    /// The fast path for one point; `None` where h3o must decide.
    pub fn fast_cell(&self, lat_deg: f64, lng_deg: f64, res: u8) -> Option<u64> {
        let (face, a, b) = self.project(lat_deg, lng_deg, res)?;
        let (mut la, mut lb) = ([a], [b]);
        let bits = digits_lanes(&mut la, &mut lb, res);
        finish(face, bits[0], la[0], lb[0], res)
    }

    /// The point's face and its axial hex coordinates (i − k, j − k) at `res` on that face;
    /// `None` at res 0, or within the margins of the closest-face or rounding choices.
    fn project(&self, lat_deg: f64, lng_deg: f64, res: u8) -> Option<(usize, i32, i32)> {
        if res == 0 || !lat_deg.is_finite() || !lng_deg.is_finite() {
            return None;
        }
        let (slat, clat) = lat_deg.to_radians().sin_cos();
        let (slng, clng) = lng_deg.to_radians().sin_cos();
        let p = [clng * clat, slng * clat, slat];
        // closest face by squared chord: largest p·c (|p - c|² = 2 - 2 p·c)
        let (mut best, mut best_dot, mut second) = (0usize, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (f, axes) in self.faces.iter().enumerate() {
            let d = dot(&p, &axes.c);
            if d > best_dot {
                second = best_dot;
                best_dot = d;
                best = f;
            } else if d > second {
                second = d;
            }
        }
        if 2.0 * (best_dot - second) < FACE_MARGIN {
            return None;
        }
        let class3 = (res & 1) as usize;
        let axes = &self.faces[best];
        let k = self.scale[res as usize] / best_dot;
        let x = dot(&p, &axes.u[class3]) * k;
        let y = dot(&p, &axes.v[class3]) * k;
        let (i, j, kk) = hex2d_to_ijk(x, y)?;
        Some((best, i - kk, j - kk))
    }
}

/// Points whose digit loops run side by side in [`Projector::cells`].
const LANES: usize = 8;

/// Base cell and rotation of res-0 axial coordinates on `face`, into the finished index;
/// `None` for the pentagons' base cells (h3o handles their deleted k-axis subsequence).
fn finish(face: usize, digit_bits: u64, a: i32, b: i32, res: u8) -> Option<u64> {
    let (i, j, k) = normalize(a, b, 0);
    if i > 2 || j > 2 || k > 2 {
        return None;
    }
    let (base, rot) = FACE_IJK_BASE_CELLS[face][(i * 9 + j * 3 + k) as usize];
    if BaseCell::try_from(base)
        .map(|c| c.is_pentagon())
        .unwrap_or(true)
    {
        return None;
    }
    let header = (1u64 << 59) | (u64::from(res) << 52) | (u64::from(base) << 45);
    let unused = (1u64 << (3 * (15 - u32::from(res)))) - 1;
    Some(rotate60ccw(header | digit_bits | unused, res, rot))
}

/// h3o's own answer (the slow path, and the tests' oracle).
pub fn reference_cell(lat_deg: f64, lng_deg: f64, res: u8) -> u64 {
    let r = Resolution::try_from(res).expect("resolution in 0..=15");
    match LatLng::new(lat_deg, lng_deg) {
        Ok(ll) => u64::from(ll.to_cell(r)),
        Err(_) => 0,
    }
}

/// H3's hex2d → IJK quantisation (`_hex2dToCoordIJK`), or `None` within MARGIN of a choice.
fn hex2d_to_ijk(x: f64, y: f64) -> Option<(i32, i32, i32)> {
    let a1 = x.abs();
    let a2 = y.abs();
    if a1 < MARGIN || a2 < MARGIN {
        return None;
    }
    let x2 = a2 * RSIN60;
    let x1 = a1 + x2 / 2.0;
    let m1 = x1 as i32;
    let m2 = x2 as i32;
    let r1 = x1 - f64::from(m1);
    let r2 = x2 - f64::from(m2);
    // every threshold the branches below compare against, near or not
    let near = |a: f64, b: f64| (a - b).abs() < MARGIN;
    let inside = MARGIN..=1.0 - MARGIN;
    if !inside.contains(&r1)
        || !inside.contains(&r2)
        || near(r1, 0.5)
        || near(r1, 1.0 / 3.0)
        || near(r1, 2.0 / 3.0)
        || near(r2, (1.0 + r1) / 2.0)
        || near(r2, 1.0 - r1)
        || near(r2, 2.0 * r1)
        || near(r2, 2.0 * r1 - 1.0)
        || near(r2, r1 / 2.0)
    {
        return None;
    }
    let (mut i, mut j) = if r1 < 0.5 {
        if r1 < 1.0 / 3.0 {
            (m1, m2 + i32::from(r2 >= (1.0 + r1) / 2.0))
        } else {
            (
                m1 + i32::from((1.0 - r1) <= r2 && r2 < 2.0 * r1),
                m2 + i32::from(r2 >= 1.0 - r1),
            )
        }
    } else if r1 < 2.0 / 3.0 {
        (
            m1 + i32::from(2.0 * r1 - 1.0 >= r2 || r2 >= 1.0 - r1),
            m2 + i32::from(r2 >= 1.0 - r1),
        )
    } else {
        (m1 + 1, m2 + i32::from(r2 >= r1 / 2.0))
    };
    if x < 0.0 {
        let offset = j % 2;
        let axis_i = (j + offset) / 2;
        let diff = i - axis_i;
        i -= 2 * diff + offset;
    }
    if y < 0.0 {
        i -= (2 * j + 1) / 2;
        j = -j;
    }
    Some(normalize(i, j, 0))
}

fn normalize(i: i32, j: i32, k: i32) -> (i32, i32, i32) {
    let m = i.min(j).min(k);
    (i - m, j - m, k - m)
}

/// Rounding of n/7 to the nearest integer (never a tie: 7 is odd), as h3o's `round(n / 7.0)`:
/// floor((2n + 7) / 14), shifted positive so it is an unsigned division by a constant.
#[inline(always)]
fn div7_round(n: i32) -> i32 {
    const OFF: i32 = 1 << 26; // |n| < 2^26 for every resolution's coordinates on a face
    ((2 * n + 7 + 14 * OFF) as u32 / 14) as i32 - OFF
}

/// The digit of a unit axial offset (i − k, j − k), in nibble `(di + 1) * 3 + (dj + 1)`:
/// centre 0, K 1 = (−1, −1), J 2 = (0, 1), JK 3 = (−1, 0), I 4 = (1, 0), IK 5 = (0, −1),
/// IJ 6 = (1, 1); nibbles 2 and 6, (−1, 1) and (1, −1), are not unit vectors.
const AXIAL_DIGITS: u64 = 0x6_4720_5731;

/// The index digits (finest first) of `N` points' axial coordinates at `res`, each
/// point's coordinates left at res 0. H3's up-aperture-7 then down-aperture-7 per step, in
/// axial coordinates, which normalisation leaves unchanged, so no normalising in between.
fn digits_lanes<const N: usize>(a: &mut [i32; N], b: &mut [i32; N], res: u8) -> [u64; N] {
    let mut bits = [0u64; N];
    for r in (1..=res).rev() {
        let shift = 3 * (15 - u32::from(r));
        let class3 = r & 1 == 1; // counter-clockwise
        for l in 0..N {
            let (pa, pb, ca, cb);
            if class3 {
                pa = div7_round(3 * a[l] - b[l]);
                pb = div7_round(a[l] + 2 * b[l]);
                (ca, cb) = (2 * pa + pb, 3 * pb - pa);
            } else {
                pa = div7_round(2 * a[l] + b[l]);
                pb = div7_round(3 * b[l] - a[l]);
                (ca, cb) = (3 * pa - pb, pa + 2 * pb);
            }
            let nibble = ((a[l] - ca + 1) * 3 + (b[l] - cb + 1)) as u32;
            bits[l] |= ((AXIAL_DIGITS >> (4 * nibble)) & 7) << shift;
            (a[l], b[l]) = (pa, pb);
        }
    }
    bits
}

/// One 60° counter-clockwise rotation of a digit (H3's `_rotate60ccw`).
const CCW: [u64; 8] = [0, 5, 3, 1, 6, 4, 2, 7];

/// Rotate every digit of `bits` (resolution `res`) `count` times 60° counter-clockwise.
fn rotate60ccw(mut bits: u64, res: u8, count: u8) -> u64 {
    let count = count % 6;
    if count == 0 {
        return bits;
    }
    let mut map = [0u64, 1, 2, 3, 4, 5, 6, 7];
    for _ in 0..count {
        map = map.map(|d| CCW[d as usize]);
    }
    for r in 1..=u32::from(res) {
        let shift = 3 * (15 - r);
        let d = (bits >> shift) & 7;
        bits = (bits & !(7u64 << shift)) | (map[d as usize] << shift);
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(s: &mut u64) -> f64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*s >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn same_cells_as_h3o_worldwide() {
        let p = Projector::new();
        let mut s = 7u64;
        let mut fast = 0usize;
        for n in 0..400_000 {
            // uniform on the sphere, and every tenth point in Tokyo's square degree
            let (lat, lng) = if n % 10 == 0 {
                (35.0 + lcg(&mut s), 139.0 + lcg(&mut s))
            } else {
                (
                    (2.0 * lcg(&mut s) - 1.0).asin().to_degrees(),
                    360.0 * lcg(&mut s) - 180.0,
                )
            };
            let res = (n % 16) as u8;
            let want = reference_cell(lat, lng, res);
            if let Some(cell) = p.fast_cell(lat, lng, res) {
                fast += 1;
                assert_eq!(cell, want, "fast path at ({lat}, {lng}) res {res}");
            } else if n % 10 == 0 && res > 0 {
                panic!("Tokyo point ({lat}, {lng}) res {res} left the fast path");
            }
            assert_eq!(p.cell(lat, lng, res), want, "({lat}, {lng}) res {res}");
        }
        // the fast path answers all but res 0 and the pentagons' base cells (~6 % of the globe)
        assert!(fast > 400_000 * 85 / 100, "fast path answered only {fast}");
    }

    #[test]
    fn batches_give_the_same_cells() {
        let p = Projector::new();
        let mut s = 11u64;
        let n = 100_003; // not a multiple of LANES
        let lat: Vec<f64> = (0..n)
            .map(|_| (2.0 * lcg(&mut s) - 1.0).asin().to_degrees())
            .collect();
        let lng: Vec<f64> = (0..n).map(|_| 360.0 * lcg(&mut s) - 180.0).collect();
        for res in [0u8, 1, 5, 9, 12, 15] {
            let got = p.cells(&lat, &lng, res);
            for k in 0..n {
                assert_eq!(
                    got[k],
                    reference_cell(lat[k], lng[k], res),
                    "({}, {}) res {res}",
                    lat[k],
                    lng[k]
                );
            }
        }
        assert_eq!(
            p.cells(&[f64::NAN], &[0.0], 9),
            vec![0],
            "not a point: no cell"
        );
    }

    #[test]
    fn rotations_compose_to_identity() {
        let cell = reference_cell(35.68, 139.76, 12);
        assert_eq!(rotate60ccw(cell, 12, 6), cell);
        assert_ne!(rotate60ccw(cell, 12, 1), cell);
    }
}
