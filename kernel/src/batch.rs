//! Kafka record batches (message format v2) written natively: the records of a batch as the
//! presence book serialises its states, and the batch's header with its CRC-32C once the
//! producer names its id, epoch and sequence (`streams.produce.RecordsBatch`).
//!
//! The same bytes as aiokafka's `DefaultRecordBatchBuilder` for records appended with one
//! timestamp and no headers, uncompressed (tested to the byte in tests/unit/test_produce.py).
//! Appending a record there costs ~0.75 µs of Python a record; here a copy.

/// Bytes of a v2 batch's header (base offset to record count).
pub const HEADER: usize = 61;
pub const ATTRIBUTES_AT: usize = 21; // the CRC covers the header from here, and every record
pub const CRC_AT: usize = 17;
pub const MAGIC: i8 = 2;
const NO_PARTITION_LEADER_EPOCH: i32 = -1;
const TRANSACTIONAL: i16 = 0x10;

/// `v` as a zig-zag varint (Kafka's varint and varlong).
pub fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// One record: attributes 0, the batch's timestamp (delta 0), offset delta `delta`, the key
/// and the value (None: null, a value's tombstone), no headers; with its length in front.
pub fn record(delta: i32, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
    body.push(0); // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, i64::from(delta));
    for part in [key, value] {
        match part {
            Some(b) => {
                varint(&mut body, b.len() as i64);
                body.extend_from_slice(b);
            }
            None => varint(&mut body, -1),
        }
    }
    varint(&mut body, 0); // headers
    let mut out = Vec::with_capacity(body.len() + 3);
    varint(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    out
}

/// Records split into batches as aiokafka's builder fills them: a record joins the batch if
/// the batch (header included) stays under `batch_bytes` (reaching it exactly does not, as in
/// aiokafka's compiled builder), and the first record of a batch always does. Returns each batch's records and their count.
pub fn split<'a>(
    rows: impl Iterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
    batch_bytes: usize,
) -> Vec<(Vec<u8>, i32)> {
    let mut out = Vec::new();
    let (mut cur, mut n) = (Vec::new(), 0i32);
    for (key, value) in rows {
        let mut rec = record(n, key, value);
        if n > 0 && HEADER + cur.len() + rec.len() >= batch_bytes {
            out.push((std::mem::take(&mut cur), n));
            n = 0;
            rec = record(0, key, value);
        }
        cur.extend_from_slice(&rec);
        n += 1;
    }
    if n > 0 {
        out.push((cur, n));
    }
    out
}

/// What a batch's header says besides its records.
pub struct Header {
    pub count: i32,
    pub timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

/// The whole batch: header (with its CRC-32C) and `records`.
pub fn batch(records: &[u8], h: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + records.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker's
    out.extend_from_slice(&((HEADER - 12 + records.len()) as i32).to_be_bytes());
    out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
    out.push(MAGIC as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    let attributes = if h.transactional { TRANSACTIONAL } else { 0 };
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&(h.count - 1).max(0).to_be_bytes()); // last offset delta
    out.extend_from_slice(&h.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&h.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&h.count.to_be_bytes());
    out.extend_from_slice(records);
    let crc = crc32c(&out[ATTRIBUTES_AT..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Kafka's murmur2 of a key (the Java client's `Utils.murmur2`, aiokafka's `murmur2`): the
/// default partitioner's hash, so records sent in batches land where single sends would.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5BD1_E995;
    let mut h: u32 = 0x9747_B28C ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes(w.try_into().expect("4 bytes")).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let rest = words.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h = (h ^ u32::from(rest[0])).wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// CRC-32C (Castagnoli), by the CPU's instruction where it has one.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE4.2, checked just above
            return unsafe { crc32c_sse42(data) };
        }
    }
    crc32c_table(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut crc: u64 = 0xFFFF_FFFF;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut c = crc as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

fn crc32c_table(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720's check value, and the CPU's path equal to the table's
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_table(b"123456789"), 0xE306_9283);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in [0, 1, 7, 8, 9, 63, 1000] {
            assert_eq!(crc32c(&data[..n]), crc32c_table(&data[..n]));
        }
    }

    #[test]
    fn murmur2_known_values() {
        // the Java client's test vectors (org.apache.kafka.common.utils.UtilsTest)
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(&[b'a', b'b', b'c']) as i32, 479470107);
    }

    #[test]
    fn varints_zigzag() {
        let enc = |v: i64| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(63), [126]);
        assert_eq!(enc(64), [128, 1]);
        assert_eq!(enc(-65), [129, 1]);
    }
}
