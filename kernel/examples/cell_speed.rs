//! `cargo run --release --example cell_speed`: ns per point of the kernel's H3 conversion vs h3o's.
use _kernel::cell::{reference_cell, Projector};
use std::time::Instant;

fn main() {
    let n = 1_000_000;
    let mut s: u64 = 12345;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let pts: Vec<(f64, f64)> = (0..n)
        .map(|_| (35.0 + 1.5 * next(), 139.0 + 1.5 * next()))
        .collect();
    let p = Projector::new();
    for res in [9u8, 12, 13] {
        let t = Instant::now();
        let mut acc = 0u64;
        for &(a, b) in &pts {
            acc ^= 0;
        }
        let v = p.cells(
            &pts.iter().map(|q| q.0).collect::<Vec<_>>(),
            &pts.iter().map(|q| q.1).collect::<Vec<_>>(),
            res,
        );
        for c in v {
            acc ^= c;
        }
        let ours = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        let mut acc2 = 0u64;
        for &(a, b) in &pts {
            acc2 ^= reference_cell(a, b, res);
        }
        let theirs = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(acc, acc2);
        println!("res {res}: kernel {ours:.1} ns/pt, h3o {theirs:.1} ns/pt");
    }
}
