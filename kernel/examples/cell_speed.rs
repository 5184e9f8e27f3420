//! `cargo run --release --example cell_speed`: ns per point of the kernel's H3 conversion
//! (batch) against h3o's `LatLng::to_cell`, side by side on the same 1M points, in greater
//! Tokyo (the benchmark's city) and over Japan (its country mix, partly in a pentagon's base
//! cell, where the kernel hands points to h3o).
use _kernel::cell::{reference_cell, Projector};
use std::time::Instant;

fn main() {
    let n = 1_000_000;
    let mut s: u64 = 12345;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let p = Projector::new();
    for (name, (south, north, west, east)) in [
        ("city", (35.0, 36.5, 139.0, 140.5)),
        ("country", (31.0, 43.0, 130.0, 145.0)),
    ] {
        let lat: Vec<f64> = (0..n).map(|_| south + (north - south) * next()).collect();
        let lng: Vec<f64> = (0..n).map(|_| west + (east - west) * next()).collect();
        for res in [9u8, 12, 13] {
            let t = Instant::now();
            let ours = p.cells(&lat, &lng, res);
            let t_ours = t.elapsed().as_nanos() as f64 / n as f64;
            let t = Instant::now();
            let theirs: Vec<u64> = lat
                .iter()
                .zip(&lng)
                .map(|(&a, &b)| reference_cell(a, b, res))
                .collect();
            let t_theirs = t.elapsed().as_nanos() as f64 / n as f64;
            assert_eq!(ours, theirs, "{name} res {res}: cells differ");
            println!(
                "{name} res {res}: kernel {t_ours:.1} ns/pt, h3o {t_theirs:.1} ns/pt, ratio {:.2}",
                t_theirs / t_ours
            );
        }
    }
}
