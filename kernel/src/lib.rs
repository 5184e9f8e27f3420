//! geopush's fence-matching kernel, a Python extension (`geofences._kernel`).
//!
//! `geofences.index.FenceIndex` builds its H3 cell tables with numpy, h3ronpy and shapely,
//! then hands them here. A batch: each ping's H3 cell ([`cell`]); the pings sorted by cell,
//! so each level's sorted cells are swept front to back (a cursor through a directory of
//! every 8th cell, which stays in cache, then one cache line of the table: per-ping searches
//! of tables of millions of cells missed the cache at every step); the exact tests
//! ([`exact`]) of boundary candidates; the pairs put back in ping order by a counting sort. Pairs too close to a boundary for double precision come back
//! `undecided` and Python settles them exactly, so answers are the pure path's, pair for pair.

pub mod base_cells;
pub mod batch;
pub mod book;
pub mod campaigns;
pub mod cell;
pub mod exact;
pub mod fetched;
pub mod pings;
pub mod presence;
pub mod records;
pub mod state;

use cell::Projector;
use exact::{Circle, Verdict};
use numpy::{
    IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Bumped whenever the Python-facing signature changes; index.py checks it.
const API: u32 = 8;

/// The index in matching form. Built once per catalog version, queried from any thread.
#[pyclass(frozen, module = "geofences._kernel")]
struct Kernel {
    max_res: u8,
    levels: Vec<Level>,
    grid: Vec<bool>,
    rows: i64,
    cols: i64,
    south: f64,
    west: f64,
    step: f64,
    fences: Vec<Fence>,
    bounds: Vec<[f64; 4]>,
    ring_start: Vec<usize>,
    vert_start: Vec<usize>,
    xy: Vec<[f64; 2]>,
}

/// What an exact test reads of a fence, in one cache line: a candidate costs one memory
/// access, not one per field (at 100k fences the per-field arrays missed the cache for
/// each of them).
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Fence {
    shape: Circle, // a circle's centre, radius and plane; a polygon's representative point
    circle: bool,
    shifted: bool,
}

/// One resolution's cells, ascending; cell `c` owns the entries (fence, interior) at
/// `offsets[c]..offsets[c + 1]`.
/// The arrays are the index's own numpy arrays, not copies (they are ~60 MB at 100k fences):
/// read-only, C-contiguous, and kept alive by the references held here. `posts` is every
/// POST-th cell, a directory small enough to stay in the core's own cache (see [`Level::find`]).
struct Level {
    res: u8,
    posts: Vec<u64>,
    cells: Shared<u64>,
    offsets: Shared<i64>,
    fences: Shared<i32>,
    interior: Shared<bool>,
}

/// Cells per entry of a level's directory: 8 u64s, one cache line of the table per block.
const POST: usize = 8;

impl Level {
    /// The number of cell `key`, if the level has it, for keys asked in ascending order
    /// (see [`find`]).
    #[inline]
    fn find(&self, from: &mut usize, key: u64) -> Option<usize> {
        find(&self.posts, self.cells.get(), from, key)
    }

    /// The (fence, interior) entries of cell number `c`.
    fn entries_of(&self, c: usize) -> impl Iterator<Item = (u32, bool)> + '_ {
        let (s, e) = (
            self.offsets.get()[c] as usize,
            self.offsets.get()[c + 1] as usize,
        );
        self.fences.get()[s..e]
            .iter()
            .zip(&self.interior.get()[s..e])
            .map(|(&f, &i)| (f as u32, i))
    }
}

/// A read-only numpy array borrowed for the kernel's lifetime: its data pointer and length,
/// and a reference that keeps the array (and so its buffer) alive.
struct Shared<T> {
    ptr: *const T,
    len: usize,
    _owner: Py<PyAny>,
}

// SAFETY: the buffer is immutable (checked read-only when borrowed) and outlives `self`
// (`_owner` holds the array); reading it from any thread is sound.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T: numpy::Element> Shared<T> {
    fn borrow(array: &Bound<'_, PyArray1<T>>, what: &str) -> PyResult<Self> {
        let writeable: bool = array.getattr("flags")?.getattr("writeable")?.extract()?;
        if writeable || !array.is_c_contiguous() {
            return Err(PyValueError::new_err(format!(
                "{what}: expected a read-only, contiguous array"
            )));
        }
        let view = array.readonly();
        let slice = view.as_slice()?;
        Ok(Self {
            ptr: slice.as_ptr(),
            len: slice.len(),
            _owner: array.clone().into_any().unbind(),
        })
    }

    fn get(&self) -> &[T] {
        // SAFETY: see the Send/Sync note; ptr and len came from the live array's slice
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// (ping, fence, undecided) arrays, as `match_batch` returns them.
type Pairs<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<bool>>,
);

/// (ping, fence, undecided, holds) arrays, as `match_accuracy` returns them.
type Depths<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<i8>>,
);

/// What `Kernel::batch` finds: (ping, fence, undecided, holds) per pair.
type Matched = (Vec<i64>, Vec<i64>, Vec<bool>, Vec<i8>);

/// A ping on its way through a batch.
#[derive(Clone, Copy)]
struct Ping {
    cell: u64,
    p: u32,
    lat: f64,
    lng: f64,
    acc: f64, // NaN where the batch has no accuracies
}

fn parent_of(cell: u64, res: u8) -> u64 {
    let res = u64::from(res);
    (cell & !(0xF << 52)) | (res << 52) | ((1u64 << (3 * (15 - res))) - 1)
}

/// The position of `key` in `cells` (ascending, distinct), if there, for keys asked in
/// ascending order: `from` is the directory position the previous key left (0 for the
/// first); `posts` is every POST-th cell. A step through the directory (1/POST of the table,
/// in cache) from there, then one block of POST cells, one cache line of the table.
/// Searching the table itself missed the cache at almost every step when a batch's pings
/// are few and far apart in it (a live poll of a few hundred pings over ~300k cells at 10k
/// fences: ~0.75 µs a ping to match, against ~0.6 this way).
#[inline]
fn find(posts: &[u64], cells: &[u64], from: &mut usize, key: u64) -> Option<usize> {
    let j = gallop(posts, *from, key); // the first post >= key
    *from = j.saturating_sub(1); // the next key, not smaller, is in block j - 1 or later
    if j < posts.len() && posts[j] == key {
        return Some(j * POST);
    }
    if j == 0 {
        return None; // below the first cell
    }
    let start = (j - 1) * POST + 1; // the block's post itself is < key
    let end = (j * POST).min(cells.len());
    cells[start..end]
        .iter()
        .position(|&c| c >= key)
        .filter(|&k| cells[start + k] == key)
        .map(|k| start + k)
}

/// The first position at or after `from` whose cell is >= `key` (cells ascending): steps of
/// doubling length from `from`, then a binary search in the last step.
#[inline]
fn gallop(cells: &[u64], from: usize, key: u64) -> usize {
    let n = cells.len();
    if from >= n || cells[from] >= key {
        return from;
    }
    let mut lo = from; // cells[lo] < key
    let mut step = 1usize;
    let mut hi = from + 1;
    while hi < n && cells[hi] < key {
        lo = hi;
        step *= 2;
        hi = lo + step;
    }
    let hi = hi.min(n);
    lo + 1 + cells[lo + 1..hi].partition_point(|&c| c < key)
}

impl Kernel {
    fn near(&self, lat: f64, lng: f64) -> bool {
        let r = ((lat - self.south) / self.step).floor() as i64;
        let c = ((lng - self.west) / self.step).floor() as i64;
        (0..self.rows).contains(&r)
            && (0..self.cols).contains(&c)
            && self.grid[(r * self.cols + c) as usize]
    }

    fn verdict(&self, f: usize, lat: f64, lng: f64) -> Verdict {
        let fc = &self.fences[f];
        if fc.circle {
            return fc.shape.verdict(lat, lng);
        }
        let x = self.fence_x(f, lng);
        let [x0, y0, x1, y1] = self.bounds[f];
        if !(x >= x0 && x <= x1 && lat >= y0 && lat <= y1) {
            return Verdict::Out;
        }
        exact::in_polygon(x, lat, self.rings(f))
    }

    /// A longitude in polygon `f`'s own longitude space (past 180° for a fence across it).
    fn fence_x(&self, f: usize, lng: f64) -> f64 {
        if self.fences[f].shifted && lng < 0.0 {
            lng + 360.0
        } else {
            lng
        }
    }

    /// Polygon `f`'s rings (outline, holes, other parts), each closed.
    fn rings(&self, f: usize) -> impl Iterator<Item = &[[f64; 2]]> + '_ {
        (self.ring_start[f]..self.ring_start[f + 1])
            .map(|r| &self.xy[self.vert_start[r]..self.vert_start[r + 1]])
    }

    /// The fences holding one point, as (fence, undecided), ascending by fence.
    fn at(&self, lat: f64, lng: f64, out: &mut Vec<(u32, bool)>) {
        out.clear();
        if !lat.is_finite() || !lng.is_finite() || self.levels.is_empty() || !self.near(lat, lng) {
            return;
        }
        let cell = projector().cell(lat, lng, self.max_res);
        for lv in &self.levels {
            let key = parent_of(cell, lv.res);
            if let Ok(c) = lv.cells.get().binary_search(&key) {
                for entry in lv.entries_of(c) {
                    self.test(entry, lat, lng, |f, u| out.push((f, u)));
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
        }
    }

    /// One point's signed distance to fence `f` (see `signed_distance`).
    fn signed(&self, f: usize, lat: f64, lng: f64) -> f64 {
        let fc = &self.fences[f];
        if fc.circle {
            return exact::distance_m(fc.shape.lat, fc.shape.lng, lat, lng) - fc.shape.radius;
        }
        let sign = match self.verdict(f, lat, lng) {
            Verdict::In => -1.0,
            Verdict::Out => 1.0,
            Verdict::Undecided => return f64::NAN,
        };
        let origin = (self.fence_x(f, fc.shape.lng), fc.shape.lat);
        sign * exact::boundary_distance_m(self.fence_x(f, lng), lat, origin, self.rings(f))
    }

    /// Whether a point with accuracy `acc` metres, known to be inside fence `f` (its cell is
    /// interior, or the exact test said so), is wholly inside (`-signed >= acc`, as
    /// `FenceIndex.match_accuracy` decides it): the distance to the boundary alone, not the
    /// test again (a dense catalog has ~9 fences around a ping; the test was half of matching).
    fn holds_inside(&self, f: usize, lat: f64, lng: f64, acc: f64) -> bool {
        let fc = &self.fences[f];
        if fc.circle {
            return fc.shape.holds(lat, lng, acc);
        }
        let origin = (self.fence_x(f, fc.shape.lng), fc.shape.lat);
        exact::boundary_distance_m(self.fence_x(f, lng), lat, origin, self.rings(f)) >= acc
    }

    /// One candidate entry: interior, or tested exactly; `keep(fence, undecided)` if not out.
    #[inline]
    fn test(
        &self,
        (f, interior): (u32, bool),
        lat: f64,
        lng: f64,
        mut keep: impl FnMut(u32, bool),
    ) {
        if interior {
            keep(f, false);
        } else {
            match self.verdict(f as usize, lat, lng) {
                Verdict::In => keep(f, false),
                Verdict::Undecided => keep(f, true),
                Verdict::Out => {}
            }
        }
    }

    /// The batch match (see the module's doc): (ping, fence, undecided) in ping, fence order;
    /// with accuracies, also each pair's [`Kernel::holds`] as 1 (wholly inside), 0 (not) or
    /// -1 (undecided: for Python), worked out as the pair is found.
    fn batch(&self, lat: &[f64], lng: &[f64], acc: Option<&[f64]>) -> Matched {
        let empty = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if self.levels.is_empty() {
            return empty;
        }
        // cells of the pings near some fence, packed with their ping number into sortable keys
        let res = u32::from(self.max_res);
        let (shift, width) = (3 * (15 - res), 7 + 3 * res);
        let free = 64 - width;
        let near: Vec<usize> = (0..lat.len())
            .filter(|&p| lat[p].is_finite() && lng[p].is_finite() && self.near(lat[p], lng[p]))
            .collect();
        let near_lat: Vec<f64> = near.iter().map(|&p| lat[p]).collect();
        let near_lng: Vec<f64> = near.iter().map(|&p| lng[p]).collect();
        let cells = projector().cells(&near_lat, &near_lng, self.max_res);
        let pings: Vec<Ping> = (0..near.len())
            .map(|k| Ping {
                cell: cells[k],
                p: near[k] as u32,
                lat: near_lat[k],
                lng: near_lng[k],
                acc: acc.map_or(f64::NAN, |a| a[near[k]]),
            })
            .collect();
        drop((near, near_lat, near_lng, cells));
        // (ping, fence, undecided, holds), in any order
        let mut pairs: Vec<(u32, u32, bool, i8)> = Vec::new();
        let with_acc = acc.is_some();
        // runs of at most 2^free pings: within a run a plain integer sort orders (cell, ping)
        for run in pings.chunks(1usize << free.min(24)) {
            let mut keys: Vec<u64> = run
                .iter()
                .enumerate()
                .map(|(k, q)| (((q.cell >> shift) & ((1u64 << width) - 1)) << free) | k as u64)
                .collect();
            keys.sort_unstable();
            // one gather into cell order; every level's sweep then reads memory in order
            let ordered: Vec<Ping> = keys
                .iter()
                .map(|&k| run[(k & ((1u64 << free) - 1)) as usize])
                .collect();
            drop(keys);
            for lv in &self.levels {
                let mut from = 0usize;
                for q in &ordered {
                    let key = parent_of(q.cell, lv.res);
                    if let Some(c) = lv.find(&mut from, key) {
                        for entry in lv.entries_of(c) {
                            self.test(entry, q.lat, q.lng, |f, u| {
                                let holds = if !with_acc {
                                    0
                                } else if u {
                                    -1 // settled in Python first
                                } else {
                                    i8::from(self.holds_inside(f as usize, q.lat, q.lng, q.acc))
                                };
                                pairs.push((q.p, f, u, holds))
                            });
                        }
                    }
                }
            }
        }
        // ping, then fence order: counting sort by ping, then each ping's few fences sorted
        let mut start = vec![0u32; lat.len() + 1];
        for &(p, _, _, _) in &pairs {
            start[p as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut fill = start.clone();
        let mut sorted = vec![(0u32, false, 0i8); pairs.len()];
        for &(p, f, u, h) in &pairs {
            let at = &mut fill[p as usize];
            sorted[*at as usize] = (f, u, h);
            *at += 1;
        }
        let (mut ping, mut fence, mut undecided, mut holds) = (
            Vec::with_capacity(pairs.len()),
            Vec::with_capacity(pairs.len()),
            Vec::with_capacity(pairs.len()),
            Vec::with_capacity(if with_acc { pairs.len() } else { 0 }),
        );
        for p in 0..lat.len() {
            let (s, e) = (start[p] as usize, start[p + 1] as usize);
            if e - s > 1 {
                sorted[s..e].sort_unstable_by_key(|&(f, _, _)| f);
            }
            for &(f, u, h) in &sorted[s..e] {
                ping.push(p as i64);
                fence.push(i64::from(f));
                undecided.push(u);
                if with_acc {
                    holds.push(h);
                }
            }
        }
        (ping, fence, undecided, holds)
    }
}

#[pymethods]
impl Kernel {
    /// Arguments: see `geofences.index.FenceIndex._kernel_args`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (max_res, levels, cells, offsets, fences, interior, grid, south, west, step,
                        circle, lat, lng, radius, shifted, bounds, ring_start, vert_start, xy))]
    fn new(
        max_res: u8,
        levels: Vec<u8>,
        cells: Vec<Bound<'_, PyArray1<u64>>>,
        offsets: Vec<Bound<'_, PyArray1<i64>>>,
        fences: Vec<Bound<'_, PyArray1<i32>>>,
        interior: Vec<Bound<'_, PyArray1<bool>>>,
        grid: PyReadonlyArray2<'_, bool>,
        south: f64,
        west: f64,
        step: f64,
        circle: PyReadonlyArray1<'_, bool>,
        lat: PyReadonlyArray1<'_, f64>,
        lng: PyReadonlyArray1<'_, f64>,
        radius: PyReadonlyArray1<'_, f64>,
        shifted: PyReadonlyArray1<'_, bool>,
        bounds: PyReadonlyArray2<'_, f64>,
        ring_start: PyReadonlyArray1<'_, i64>,
        vert_start: PyReadonlyArray1<'_, i64>,
        xy: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Self> {
        let n_levels = levels.len();
        if [cells.len(), offsets.len(), fences.len(), interior.len()] != [n_levels; 4] {
            return Err(PyValueError::new_err(
                "one cells/offsets/fences/interior array per level",
            ));
        }
        let n_fences = circle.len();
        let mut built = Vec::with_capacity(n_levels);
        for l in 0..n_levels {
            let table = Shared::borrow(&cells[l], "cells")?;
            let level = Level {
                res: levels[l],
                posts: table.get().iter().step_by(POST).copied().collect(),
                cells: table,
                offsets: Shared::borrow(&offsets[l], "offsets")?,
                fences: Shared::borrow(&fences[l], "fences")?,
                interior: Shared::borrow(&interior[l], "interior")?,
            };
            let (c, o, f) = (level.cells.get(), level.offsets.get(), level.fences.get());
            if o.len() != c.len() + 1
                || f.len() != level.interior.get().len()
                || o.first().copied() != Some(0)
                || o.last().copied() != Some(f.len() as i64)
                || o.windows(2).any(|w| w[0] > w[1])
            {
                return Err(PyValueError::new_err(format!(
                    "level {l}: offsets do not match cells and fences"
                )));
            }
            if c.windows(2).any(|w| w[0] >= w[1]) {
                return Err(PyValueError::new_err(format!(
                    "level {l}: cells are not ascending and distinct"
                )));
            }
            if f.iter().any(|&x| x < 0 || x as usize >= n_fences) {
                return Err(PyValueError::new_err(format!(
                    "level {l}: a fence number out of range"
                )));
            }
            built.push(level);
        }
        let g = grid.as_array();
        let (rows, cols) = (g.nrows() as i64, g.ncols() as i64);
        let b = bounds.as_array();
        let xy = xy.as_array();
        let (circle, lat, lng) = (circle.as_slice()?, lat.as_slice()?, lng.as_slice()?);
        let (radius, shifted) = (radius.as_slice()?, shifted.as_slice()?);
        let n = circle.len();
        if [lat.len(), lng.len(), radius.len(), shifted.len(), b.nrows()] != [n; 5] {
            return Err(PyValueError::new_err("fence arrays disagree in length"));
        }
        let k = Kernel {
            max_res,
            levels: built,
            grid: g.iter().copied().collect(),
            rows,
            cols,
            south,
            west,
            step,
            fences: (0..n)
                .map(|f| Fence {
                    shape: Circle::new(lat[f], lng[f], radius[f]),
                    circle: circle[f],
                    shifted: shifted[f],
                })
                .collect(),
            bounds: b
                .rows()
                .into_iter()
                .map(|r| [r[0], r[1], r[2], r[3]])
                .collect(),
            ring_start: ring_start.as_slice()?.iter().map(|&x| x as usize).collect(),
            vert_start: vert_start.as_slice()?.iter().map(|&x| x as usize).collect(),
            xy: xy.rows().into_iter().map(|r| [r[0], r[1]]).collect(),
        };
        if k.ring_start.len() != n + 1
            || k.vert_start.last().copied().unwrap_or(0) != k.xy.len()
            || k.ring_start[n] + 1 != k.vert_start.len()
        {
            return Err(PyValueError::new_err("fence arrays disagree in length"));
        }
        Ok(k)
    }

    /// Every (ping, fence) whose cells hold the ping and whose exact test passes or cannot
    /// decide: (ping, fence, undecided), sorted by ping then fence. Frees the GIL.
    fn match_batch<'py>(
        &self,
        py: Python<'py>,
        lat: PyReadonlyArray1<'py, f64>,
        lng: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Pairs<'py>> {
        let lat = lat.as_slice()?;
        let lng = lng.as_slice()?;
        if lat.len() != lng.len() {
            return Err(PyValueError::new_err("lat and lng differ in length"));
        }
        let (ping, fence, undecided, _) = py.allow_threads(|| self.batch(lat, lng, None));
        Ok((
            ping.into_pyarray(py),
            fence.into_pyarray(py),
            undecided.into_pyarray(py),
        ))
    }

    /// `match_batch` with each point's accuracy (metres): also, per pair, whether the
    /// accuracy circle lies wholly inside the fence: 1, 0, or -1 where Python must settle it
    /// (an undecided pair, or a point within ~0.1 mm of a polygon edge). Worked out while
    /// the pair is found (circles mostly by their plane), not in a second pass. Frees the GIL.
    fn match_accuracy<'py>(
        &self,
        py: Python<'py>,
        lat: PyReadonlyArray1<'py, f64>,
        lng: PyReadonlyArray1<'py, f64>,
        acc: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Depths<'py>> {
        let (lat, lng, acc) = (lat.as_slice()?, lng.as_slice()?, acc.as_slice()?);
        if lat.len() != lng.len() || lat.len() != acc.len() {
            return Err(PyValueError::new_err("lat, lng and acc differ in length"));
        }
        let (ping, fence, undecided, holds) = py.allow_threads(|| self.batch(lat, lng, Some(acc)));
        Ok((
            ping.into_pyarray(py),
            fence.into_pyarray(py),
            undecided.into_pyarray(py),
            holds.into_pyarray(py),
        ))
    }

    /// Metres from each point to its fence's boundary, negative inside (see
    /// `FenceIndex.signed_distance_m`); NaN where a polygon's in-or-out is undecided (the
    /// point lies within ~0.1 mm of an edge), for Python to settle. Frees the GIL.
    fn signed_distance<'py>(
        &self,
        py: Python<'py>,
        fence: PyReadonlyArray1<'py, i64>,
        lat: PyReadonlyArray1<'py, f64>,
        lng: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (fence, lat, lng) = (fence.as_slice()?, lat.as_slice()?, lng.as_slice()?);
        if fence.len() != lat.len() || lat.len() != lng.len() {
            return Err(PyValueError::new_err("fence, lat and lng differ in length"));
        }
        if let Some(bad) = fence
            .iter()
            .find(|&&f| f < 0 || f as usize >= self.fences.len())
        {
            return Err(PyValueError::new_err(format!(
                "fence {bad} is not in this index"
            )));
        }
        let out: Vec<f64> = py.allow_threads(|| {
            (0..fence.len())
                .map(|k| self.signed(fence[k] as usize, lat[k], lng[k]))
                .collect()
        });
        Ok(out.into_pyarray(py))
    }

    /// The fences holding one point: [(fence, undecided)], ascending.
    fn fences_at(&self, lat: f64, lng: f64) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        self.at(lat, lng, &mut out);
        out
    }

    /// Bytes the kernel holds of its own: the occupancy grid, the per-fence arrays, the
    /// polygon rings and the levels' directories (the level tables are the index's numpy
    /// arrays, counted there).
    fn nbytes(&self) -> usize {
        self.grid.len()
            + self
                .levels
                .iter()
                .map(|lv| lv.posts.len() * 8)
                .sum::<usize>()
            + self.fences.len() * (std::mem::size_of::<Fence>() + 32 + 8)
            + self.vert_start.len() * 8
            + self.xy.len() * 16
    }
}

/// Epoch milliseconds as the decision records write a UTC time (`records::iso_utc`; Python's
/// own is `decisions.decision_row.iso_utc`, tested against this one).
#[pyfunction]
fn iso_utc(ts_ms: i64) -> String {
    let mut s = String::new();
    records::iso_utc(&mut s, ts_ms);
    s
}

/// The H3 cells of points (degrees) at `res`: h3o's cells, ~4x cheaper (see [`cell`]).
/// Frees the GIL, so the index build's threads convert in parallel.
#[pyfunction]
fn cells<'py>(
    py: Python<'py>,
    lat: PyReadonlyArray1<'py, f64>,
    lng: PyReadonlyArray1<'py, f64>,
    res: u8,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    if res > 15 {
        return Err(PyValueError::new_err(format!(
            "resolution {res} is not in 0..=15"
        )));
    }
    let (lat, lng) = (lat.as_slice()?, lng.as_slice()?);
    if lat.len() != lng.len() {
        return Err(PyValueError::new_err("lat and lng differ in length"));
    }
    let out = py.allow_threads(|| projector().cells(lat, lng, res));
    Ok(out.into_pyarray(py))
}

fn projector() -> &'static Projector {
    static PROJECTOR: std::sync::OnceLock<Projector> = std::sync::OnceLock::new();
    PROJECTOR.get_or_init(Projector::new)
}

/// A record's value parsed by the ping fast path (see [`pings`]), checked against its key;
/// None where Python's detailed path must look (not bytes, unusual or invalid).
fn fast_record<'a>(value: &'a Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> Option<pings::Fast<'a>> {
    let raw = value.downcast::<pyo3::types::PyBytes>().ok()?;
    let key = key
        .downcast::<pyo3::types::PyBytes>()
        .ok()
        .map(|k| k.as_bytes());
    pings::fast(raw.as_bytes(), key)
}

/// The usual pings of a batch of records, parsed natively (see [`pings`]): a list of
/// `ping(device_id, ts_ms, lat, lng, accuracy_m, speed_mps)`, None where Python's detailed
/// path must look (an unusual or invalid ping, a presence check, no value).
#[pyfunction]
fn parse_pings<'py>(
    py: Python<'py>,
    values: &Bound<'py, pyo3::types::PyList>,
    keys: &Bound<'py, pyo3::types::PyList>,
    ping: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, pyo3::types::PyList>> {
    use pyo3::types::PyList;
    if values.len() != keys.len() {
        return Err(PyValueError::new_err("values and keys differ in length"));
    }
    let out = PyList::empty(py);
    for (value, key) in values.iter().zip(keys.iter()) {
        let parsed = fast_record(&value, &key);
        match parsed {
            None => out.append(py.None())?,
            Some(p) => out.append(ping.call1((
                p.device.as_ref(),
                p.ts_ms,
                p.lat,
                p.lng,
                p.acc,
                p.speed,
            ))?)?,
        }
    }
    Ok(out)
}

/// `(key, value)` rows (bytes or None each) as Kafka v2 records, split into batches as
/// aiokafka's builder splits them at `batch_bytes`: [(records, count)] for [`record_batch`].
#[pyfunction]
fn encode_records<'py>(
    py: Python<'py>,
    rows: &Bound<'py, pyo3::types::PyList>,
    batch_bytes: usize,
) -> PyResult<Vec<(Bound<'py, pyo3::types::PyBytes>, i32)>> {
    use pyo3::types::{PyBytes, PyTuple};
    type Part<'py> = Option<Bound<'py, PyBytes>>;
    let mut pairs: Vec<(Part<'py>, Part<'py>)> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let row = row.downcast::<PyTuple>().map_err(|_| {
            PyValueError::new_err(format!("row {i}: expected a (key, value) tuple"))
        })?;
        let part = |k: usize, what: &str| -> PyResult<Option<Bound<'py, PyBytes>>> {
            let item = row.get_item(k)?;
            if item.is_none() {
                return Ok(None);
            }
            item.downcast_into::<PyBytes>()
                .map(Some)
                .map_err(|_| PyValueError::new_err(format!("row {i}: the {what} is not bytes")))
        };
        pairs.push((part(0, "key")?, part(1, "value")?));
    }
    let rows = pairs.iter().map(|(k, v)| {
        (
            k.as_ref().map(|b| b.as_bytes()),
            v.as_ref().map(|b| b.as_bytes()),
        )
    });
    Ok(batch::split(rows, batch_bytes)
        .into_iter()
        .map(|(records, n)| (PyBytes::new(py, &records), n))
        .collect())
}

/// The partition of each key among `partitions` as the producer's default partitioner picks
/// it: `(murmur2(key) & 0x7fffffff) % partitions`.
#[pyfunction]
fn key_partitions(
    keys: Vec<Bound<'_, pyo3::types::PyBytes>>,
    partitions: u32,
) -> PyResult<Vec<u32>> {
    if partitions == 0 {
        return Err(PyValueError::new_err("a topic has at least one partition"));
    }
    Ok(keys
        .iter()
        .map(|k| (batch::murmur2(k.as_bytes()) & 0x7FFF_FFFF) % partitions)
        .collect())
}

/// Whether every whole batch of a fetched buffer can be read by [`read_records`] (message
/// format v2, uncompressed); else aiokafka reads it.
#[pyfunction]
fn plain_batches(buf: &[u8]) -> bool {
    fetched::plain(buf)
}

/// Up to `max` records of a fetched buffer from byte `pos` (a batch's start) whose offsets are
/// at least `next_offset`: (keys, values, offsets, first timestamp or None, the next read's
/// pos and next_offset, every whole batch read). ValueError names a bad CRC's batch or what
/// is corrupt.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn read_records<'py>(
    py: Python<'py>,
    buf: &Bound<'py, pyo3::types::PyBytes>,
    pos: usize,
    next_offset: i64,
    max: usize,
    check_crc: bool,
) -> PyResult<(
    Bound<'py, pyo3::types::PyList>,
    Bound<'py, pyo3::types::PyList>,
    Bound<'py, pyo3::types::PyList>,
    Option<i64>,
    usize,
    i64,
    bool,
)> {
    use pyo3::types::{PyBytes, PyList};
    let r = fetched::read(buf.as_bytes(), pos, next_offset, max, check_crc).map_err(|e| {
        PyValueError::new_err(match e {
            fetched::Error::Crc(base) => {
                format!("the CRC-32C of the batch at offset {base} differs from its bytes")
            }
            fetched::Error::Corrupt(what) | fetched::Error::Unsupported(what) => what,
        })
    })?;
    let bytes = |part: &Option<&[u8]>| -> PyObject {
        match part {
            Some(b) => PyBytes::new(py, b).into_any().unbind(),
            None => py.None(),
        }
    };
    let keys = PyList::new(py, r.keys.iter().map(bytes))?;
    let values = PyList::new(py, r.values.iter().map(bytes))?;
    let offsets = PyList::new(py, &r.offsets)?;
    Ok((
        keys,
        values,
        offsets,
        r.first_ts,
        r.pos,
        r.next_offset,
        r.done,
    ))
}

/// A whole v2 record batch of `records` (from [`encode_records`]), its header written with
/// the producer's id, epoch and first sequence and the batch's CRC-32C.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn record_batch<'py>(
    py: Python<'py>,
    records: &[u8],
    count: i32,
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
) -> Bound<'py, pyo3::types::PyBytes> {
    let header = batch::Header {
        count,
        timestamp_ms,
        producer_id,
        producer_epoch,
        base_sequence,
        transactional,
    };
    pyo3::types::PyBytes::new(py, &batch::batch(records, &header))
}

/// A batch of records parsed natively straight into columns, without a Python object per
/// ping: (device ids, kind, ts_ms, lat, lng, accuracy_m, speed_mps), NaN for an absent number.
/// Kind 0 is a usual ping (see [`pings`]); kind 2 (id None, numbers NaN) is a record Python's
/// detailed path must look at (an unusual or invalid ping, a presence check, no value).
#[pyfunction]
fn parse_columns<'py>(
    py: Python<'py>,
    values: &Bound<'py, pyo3::types::PyList>,
    keys: &Bound<'py, pyo3::types::PyList>,
) -> PyResult<(Bound<'py, pyo3::types::PyList>, ColumnArrays<'py>)> {
    use pyo3::types::{PyList, PyString};
    if values.len() != keys.len() {
        return Err(PyValueError::new_err("values and keys differ in length"));
    }
    let n = values.len();
    let ids = PyList::empty(py);
    let (mut kind, mut ts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut cols: [Vec<f64>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
    for (value, key) in values.iter().zip(keys.iter()) {
        let parsed = fast_record(&value, &key);
        match parsed {
            None => {
                ids.append(py.None())?;
                kind.push(2u8);
                ts.push(0i64);
                for c in cols.iter_mut() {
                    c.push(f64::NAN);
                }
            }
            Some(p) => {
                ids.append(PyString::new(py, p.device.as_ref()))?;
                kind.push(0u8);
                ts.push(p.ts_ms);
                cols[0].push(p.lat);
                cols[1].push(p.lng);
                cols[2].push(p.acc.unwrap_or(f64::NAN));
                cols[3].push(p.speed.unwrap_or(f64::NAN));
            }
        }
    }
    Ok((ids, column_arrays(py, kind, ts, cols)))
}

/// A batch's (kind, ts_ms, lat, lng, accuracy_m, speed_mps) as numpy arrays.
type ColumnArrays<'py> = (
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
);

fn column_arrays<'py>(
    py: Python<'py>,
    kind: Vec<u8>,
    ts: Vec<i64>,
    cols: [Vec<f64>; 4],
) -> ColumnArrays<'py> {
    let [lat, lng, acc, speed] = cols;
    (
        kind.into_pyarray(py),
        ts.into_pyarray(py),
        lat.into_pyarray(py),
        lng.into_pyarray(py),
        acc.into_pyarray(py),
        speed.into_pyarray(py),
    )
}

/// The columns of a batch of `Ping`s and presence checks (anything not of type `ping`):
/// (kind: 0 ping, 1 check; ts_ms; lat, lng, accuracy_m, speed_mps with NaN for none), read
/// in one pass for the presence book and the index.
#[pyfunction]
fn columns<'py>(
    py: Python<'py>,
    items: &Bound<'py, pyo3::types::PyList>,
    ping: &Bound<'py, pyo3::types::PyType>,
) -> PyResult<ColumnArrays<'py>> {
    use pyo3::intern;
    let n = items.len();
    let (mut kind, mut ts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut cols: [Vec<f64>; 4] = std::array::from_fn(|_| Vec::with_capacity(n));
    let opt = |v: Bound<'py, PyAny>| -> PyResult<f64> {
        if v.is_none() {
            Ok(f64::NAN)
        } else {
            v.extract()
        }
    };
    for item in items.iter() {
        ts.push(item.getattr(intern!(py, "ts_ms"))?.extract::<i64>()?);
        if item.get_type().is(ping) {
            kind.push(0u8);
            cols[0].push(item.getattr(intern!(py, "lat"))?.extract()?);
            cols[1].push(item.getattr(intern!(py, "lng"))?.extract()?);
            cols[2].push(opt(item.getattr(intern!(py, "accuracy_m"))?)?);
            cols[3].push(opt(item.getattr(intern!(py, "speed_mps"))?)?);
        } else {
            kind.push(1u8);
            for c in cols.iter_mut() {
                c.push(f64::NAN);
            }
        }
    }
    Ok(column_arrays(py, kind, ts, cols))
}

#[pymodule]
fn _kernel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("API", API)?;
    m.add_class::<Kernel>()?;
    m.add_class::<book::PresenceBook>()?;
    m.add_class::<book::PresenceCatalog>()?;
    m.add_class::<book::Suppressions>()?;
    m.add_function(wrap_pyfunction!(iso_utc, m)?)?;
    m.add_function(wrap_pyfunction!(cells, m)?)?;
    m.add_function(wrap_pyfunction!(parse_pings, m)?)?;
    m.add_function(wrap_pyfunction!(columns, m)?)?;
    m.add_function(wrap_pyfunction!(parse_columns, m)?)?;
    m.add_function(wrap_pyfunction!(encode_records, m)?)?;
    m.add_function(wrap_pyfunction!(record_batch, m)?)?;
    m.add_function(wrap_pyfunction!(key_partitions, m)?)?;
    m.add_function(wrap_pyfunction!(plain_batches, m)?)?;
    m.add_function(wrap_pyfunction!(read_records, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{find, POST};

    /// `find` against a plain binary search, for every key near every cell of tables of
    /// many sizes (a block cut short at the end, one post, none), asked in ascending order
    /// as a batch asks them, with keys repeated and skipped.
    #[test]
    fn find_is_a_binary_search_for_ascending_keys() {
        for n in [
            0usize,
            1,
            2,
            POST - 1,
            POST,
            POST + 1,
            3 * POST,
            5 * POST + 3,
            200,
        ] {
            let cells: Vec<u64> = (0..n as u64) // ascending, gaps of 2 to 5
                .map(|i| 10 + 4 * i + (i % 3))
                .collect();
            let posts: Vec<u64> = cells.iter().step_by(POST).copied().collect();
            let top = cells.last().copied().unwrap_or(0) + 5;
            for stride in [1u64, 2, 7, 40] {
                let mut from = 0usize;
                let mut key = 0u64;
                while key <= top {
                    for _ in 0..2 {
                        let want = cells.binary_search(&key).ok();
                        assert_eq!(
                            find(&posts, &cells, &mut from, key),
                            want,
                            "n {n}, key {key}"
                        );
                    }
                    key += stride;
                }
            }
        }
    }
}
