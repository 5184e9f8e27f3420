//! The exact in-or-out tests, where a cell alone cannot decide: circles by the geodesy
//! module's mean-latitude model, polygons by even-odd ray crossing. A pair too close to the
//! boundary for these to be trusted is `Undecided`, and Python settles it the slow, exact way
//! (Karney's geodesic for circles, GEOS for polygons), so answers match the pure path's.

const WGS84_A: f64 = 6_378_137.0;
const WGS84_F: f64 = 1.0 / 298.257223563;
const WGS84_E2: f64 = WGS84_F * (2.0 - WGS84_F);
/// geofences.geodesy.MODEL_ERROR: the band (× radius, + 1 cm) the model leaves to Karney.
const MODEL_ERROR: f64 = 5e-5;
/// Degrees (~0.1 mm): closer than this to a polygon edge, GEOS decides.
const EDGE_MARGIN: f64 = 1e-9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    In,
    Out,
    Undecided,
}

/// geofences.geodesy.distance_m_one: metres between two points (mean-latitude plane).
pub fn distance_m(lat0: f64, lng0: f64, lat: f64, lng: f64) -> f64 {
    let mid = (0.5 * (lat0 + lat)).to_radians();
    let s = mid.sin();
    let w2 = 1.0 - WGS84_E2 * s * s;
    let n = WGS84_A / w2.sqrt();
    let m = WGS84_A * (1.0 - WGS84_E2) / (w2 * w2.sqrt());
    let north = m * (lat - lat0).to_radians();
    let east = n * mid.cos() * ((lng - lng0 + 180.0).rem_euclid(360.0) - 180.0).to_radians();
    north.hypot(east)
}

/// Is (lat, lng) within `radius` metres of the centre? (geodesy.within_m's rule)
pub fn in_circle(lat0: f64, lng0: f64, radius: f64, lat: f64, lng: f64) -> Verdict {
    let d = distance_m(lat0, lng0, lat, lng);
    if (d - radius).abs() <= MODEL_ERROR * radius + 0.01 {
        Verdict::Undecided
    } else if d <= radius {
        Verdict::In
    } else {
        Verdict::Out
    }
}

/// A circle's local plane, worked out once: metres per degree north (`ky`) and east (`kx`)
/// at its centre. Near the centre the mean-latitude model's distance is this plane's to
/// within [`SCREEN_ERROR`], so most points are placed in or out with a few multiplications,
/// and only those within that band of the answer's edge pay for the model's trigonometry.
#[derive(Clone, Copy, Debug)]
pub struct Plane {
    pub kx: f64,
    pub ky: f64,
}

/// Relative error the plane is allowed against [`distance_m`]: its worst measured is 0.043 %
/// (a test below), so 1 % leaves a wide margin; a wider band only costs more trigonometry.
pub const SCREEN_ERROR: f64 = 0.01;
/// Where the plane is trusted: centres up to this latitude (cos varies slowly enough) …
const SCREEN_MAX_LAT: f64 = 80.0;
/// … and points within this many degrees of the centre in latitude and longitude.
const SCREEN_SPAN: f64 = 0.1;

impl Plane {
    pub fn at(lat0: f64) -> Self {
        let (m, n) = radii(lat0);
        let rad = std::f64::consts::PI / 180.0;
        Plane {
            kx: n * lat0.to_radians().cos() * rad,
            ky: m * rad,
        }
    }

    /// The plane's metres from (lat0, lng0) to (lat, lng), or None where the plane is not
    /// trusted (far from the centre, near a pole, across the antimeridian, not a number).
    #[inline]
    pub fn distance(&self, lat0: f64, lng0: f64, lat: f64, lng: f64) -> Option<f64> {
        let (dy, dx) = (lat - lat0, lng - lng0);
        if !(dy.abs() <= SCREEN_SPAN && dx.abs() <= SCREEN_SPAN && lat0.abs() <= SCREEN_MAX_LAT) {
            return None;
        }
        let (e, n) = (dx * self.kx, dy * self.ky);
        Some((e * e + n * n).sqrt())
    }

    /// Bounds (lo, hi) of [`distance_m`] from (lat0, lng0) to (lat, lng), where trusted.
    #[inline]
    pub fn bounds(&self, lat0: f64, lng0: f64, lat: f64, lng: f64) -> Option<(f64, f64)> {
        let d = self.distance(lat0, lng0, lat, lng)?;
        Some((
            d * (1.0 - SCREEN_ERROR) - 1e-6,
            d * (1.0 + SCREEN_ERROR) + 1e-6,
        ))
    }
}

/// A circle fence with its plane, as the exact tests read it.
#[derive(Clone, Copy, Debug)]
pub struct Circle {
    pub lat: f64,
    pub lng: f64,
    pub radius: f64,
    pub plane: Plane,
}

impl Circle {
    pub fn new(lat: f64, lng: f64, radius: f64) -> Self {
        Circle {
            lat,
            lng,
            radius,
            plane: Plane::at(lat),
        }
    }

    /// Bounds of [`distance_m`] from the centre to (lat, lng), where the plane is trusted.
    #[inline]
    fn bounds(&self, lat: f64, lng: f64) -> Option<(f64, f64)> {
        self.plane.bounds(self.lat, self.lng, lat, lng)
    }

    /// [`in_circle`], screened by the plane: the same verdict, trigonometry only for points
    /// within [`SCREEN_ERROR`] of the edge.
    #[inline]
    pub fn verdict(&self, lat: f64, lng: f64) -> Verdict {
        if let Some((lo, hi)) = self.bounds(lat, lng) {
            let band = MODEL_ERROR * self.radius + 0.01;
            if hi < self.radius - band {
                return Verdict::In;
            }
            if lo > self.radius + band {
                return Verdict::Out;
            }
        }
        in_circle(self.lat, self.lng, self.radius, lat, lng)
    }

    /// Whether a point's accuracy circle (`acc` metres) lies wholly inside: `radius -
    /// distance_m(..) >= acc`, as `FenceIndex.match_accuracy` computes it (false for a NaN
    /// `acc`), the plane deciding where it can.
    #[inline]
    pub fn holds(&self, lat: f64, lng: f64, acc: f64) -> bool {
        if let Some((lo, hi)) = self.bounds(lat, lng) {
            if self.radius - hi > acc + 1e-6 {
                return true;
            }
            if self.radius - lo < acc - 1e-6 {
                return false;
            }
        }
        -(distance_m(self.lat, self.lng, lat, lng) - self.radius) >= acc
    }
}

/// Meridional and prime-vertical radii of curvature (metres) at `lat_deg` (geodesy.radii).
pub fn radii(lat_deg: f64) -> (f64, f64) {
    let s = lat_deg.to_radians().sin();
    let w2 = 1.0 - WGS84_E2 * s * s;
    (
        WGS84_A * (1.0 - WGS84_E2) / (w2 * w2.sqrt()),
        WGS84_A / w2.sqrt(),
    )
}

/// Metres from (x, y) (degrees, in the polygon's longitude space) to the nearest edge of the
/// rings, in the local plane at (x0, y0): east = (x − x0)·kx, north = (y − y0)·ky, as
/// `FenceIndex.signed_distance_m` measures it (kx, ky from [`radii`] at y0).
pub fn boundary_distance_m<'a>(
    x: f64,
    y: f64,
    (x0, y0): (f64, f64),
    rings: impl Iterator<Item = &'a [[f64; 2]]>,
) -> f64 {
    let (m, n) = radii(y0);
    let kx = n * y0.to_radians().cos() * std::f64::consts::PI / 180.0;
    let ky = m * std::f64::consts::PI / 180.0;
    let (px, py) = ((x - x0) * kx, (y - y0) * ky);
    let mut best = f64::INFINITY;
    for ring in rings {
        for w in ring.windows(2) {
            let (ax, ay) = ((w[0][0] - x0) * kx, (w[0][1] - y0) * ky);
            let (bx, by) = ((w[1][0] - x0) * kx, (w[1][1] - y0) * ky);
            best = best.min(segment_distance2(px, py, ax, ay, bx, by));
        }
    }
    best.sqrt()
}

/// Squared distance from (px, py) to the segment a–b (degrees²).
fn segment_distance2(px: f64, py: f64, ax: f64, ay: f64, bx: f64, by: f64) -> f64 {
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
    qx * qx + qy * qy
}

/// Is (x, y) inside the polygon whose rings are `rings` (each closed: last vertex = first)?
/// Even-odd over all rings, so holes and multipolygon parts need no special case.
pub fn in_polygon<'a>(x: f64, y: f64, rings: impl Iterator<Item = &'a [[f64; 2]]>) -> Verdict {
    let mut inside = false;
    for ring in rings {
        for w in ring.windows(2) {
            let ([ax, ay], [bx, by]) = (w[0], w[1]);
            // near this edge's box: measure, and leave the point to GEOS if it is on the line
            if x >= ax.min(bx) - EDGE_MARGIN
                && x <= ax.max(bx) + EDGE_MARGIN
                && y >= ay.min(by) - EDGE_MARGIN
                && y <= ay.max(by) + EDGE_MARGIN
                && segment_distance2(x, y, ax, ay, bx, by) <= EDGE_MARGIN * EDGE_MARGIN
            {
                return Verdict::Undecided;
            }
            if (ay > y) != (by > y) && x < (bx - ax) * (y - ay) / (by - ay) + ax {
                inside = !inside;
            }
        }
    }
    if inside {
        Verdict::In
    } else {
        Verdict::Out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_with_hole() -> Vec<Vec<[f64; 2]>> {
        vec![
            vec![[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]],
            vec![[1.0, 1.0], [1.0, 3.0], [3.0, 3.0], [3.0, 1.0], [1.0, 1.0]],
        ]
    }

    /// A small deterministic generator (no dependency): xorshift64*.
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.unit()
        }
    }

    #[test]
    fn the_plane_stays_within_its_error_where_trusted() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut worst: f64 = 0.0;
        for _ in 0..200_000 {
            let lat0 = rng.range(-80.0, 80.0);
            let lng0 = rng.range(-180.0, 180.0);
            let (lat, lng) = (lat0 + rng.range(-0.1, 0.1), lng0 + rng.range(-0.1, 0.1));
            let plane = Plane::at(lat0);
            let (lo, hi) = plane.bounds(lat0, lng0, lat, lng).unwrap();
            let d = distance_m(lat0, lng0, lat, lng);
            assert!(
                lo <= d && d <= hi,
                "{lat0} {lng0} -> {lat} {lng}: {d} not in [{lo}, {hi}]"
            );
            let flat = plane.distance(lat0, lng0, lat, lng).unwrap();
            worst = worst.max((flat - d).abs() / d.max(1.0));
        }
        assert!(worst < 0.001, "the plane's error reached {worst}");
        // not trusted: near a pole, far from the centre, across the antimeridian
        assert!(Plane::at(85.0).bounds(85.0, 0.0, 85.01, 0.0).is_none());
        assert!(Plane::at(35.0).bounds(35.0, 139.0, 35.2, 139.0).is_none());
        assert!(Plane::at(-16.5)
            .bounds(-16.5, 179.99, -16.5, -179.99)
            .is_none());
    }

    #[test]
    fn screened_answers_are_the_models() {
        // points spread around circles of every size, most of them near the edge, at every
        // latitude (the poles and the antimeridian included: there the screen steps aside)
        let mut rng = Rng(42);
        let (mut screened, mut n) = (0usize, 0usize);
        for _ in 0..400_000 {
            let lat0 = rng.range(-89.9, 89.9);
            let lng0 = rng.range(-180.0, 180.0);
            let radius = rng.range(10.0, 10_000.0);
            let plane = Plane::at(lat0);
            let circle = Circle::new(lat0, lng0, radius);
            let reach = radius * rng.range(0.0, 2.0) / 111_000.0;
            let angle = rng.range(0.0, std::f64::consts::TAU);
            let lat = (lat0 + reach * angle.sin()).clamp(-90.0, 90.0);
            let lng = lng0 + reach * angle.cos() / lat0.to_radians().cos().max(0.05);
            let lng = (lng + 180.0).rem_euclid(360.0) - 180.0;
            assert_eq!(
                circle.verdict(lat, lng),
                in_circle(lat0, lng0, radius, lat, lng),
                "{lat0} {lng0} r {radius} at {lat} {lng}"
            );
            let acc = [0.0, 5.0, 25.0, rng.range(0.0, radius), f64::NAN][n % 5];
            assert_eq!(
                circle.holds(lat, lng, acc),
                -(distance_m(lat0, lng0, lat, lng) - radius) >= acc,
                "{lat0} {lng0} r {radius} at {lat} {lng} acc {acc}"
            );
            screened += usize::from(plane.bounds(lat0, lng0, lat, lng).is_some());
            n += 1;
        }
        assert!(
            screened > n / 2,
            "the screen decided too few: {screened} of {n}"
        );
    }

    #[test]
    fn holes_are_outside_and_edges_undecided() {
        let rings = square_with_hole();
        let at = |x, y| in_polygon(x, y, rings.iter().map(|r| r.as_slice()));
        assert_eq!(at(0.5, 0.5), Verdict::In);
        assert_eq!(at(2.0, 2.0), Verdict::Out);
        assert_eq!(at(5.0, 2.0), Verdict::Out);
        assert_eq!(at(4.0, 2.0), Verdict::Undecided);
        assert_eq!(at(1.0, 1.0), Verdict::Undecided);
        assert_eq!(at(3.5, 3.9999999), Verdict::In);
    }

    #[test]
    fn circle_band_is_left_to_the_geodesic() {
        let (lat, lng) = (35.68, 139.76);
        let r = 100.0;
        let north = |m: f64| lat + m / 110_950.0; // ~metres per degree of latitude there
        assert_eq!(in_circle(lat, lng, r, north(50.0), lng), Verdict::In);
        assert_eq!(in_circle(lat, lng, r, north(150.0), lng), Verdict::Out);
        let edge = (lat..north(200.0)).start; // bisect to the model's boundary
        let (mut lo, mut hi) = (edge, north(200.0));
        for _ in 0..80 {
            let mid = 0.5 * (lo + hi);
            if distance_m(lat, lng, mid, lng) <= r {
                lo = mid
            } else {
                hi = mid
            }
        }
        assert_eq!(in_circle(lat, lng, r, lo, lng), Verdict::Undecided);
    }
}
