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
