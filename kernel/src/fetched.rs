//! Fetched Kafka record batches (message format v2, uncompressed) read natively into columns:
//! keys, values and offsets, as `streams.fetched.take` reads them from aiokafka's batches.
//!
//! aiokafka builds a record object per record (and checks each batch's CRC-32C in software):
//! ~0.5 µs a record with the Python loop around it. Here the buffer of a fetch is walked once,
//! the CRC in hardware ([`crate::batch::crc32c`]). Compressed or pre-v2 batches are aiokafka's
//! to read ([`plain`] tells them apart first).

use crate::batch::{crc32c, ATTRIBUTES_AT, CRC_AT, HEADER, MAGIC};

const LOG_OVERHEAD: usize = 12; // base offset + batch length
const MAGIC_AT: usize = 16;
const CODEC_MASK: i16 = 0x07;
const LOG_APPEND_TIME: i16 = 0x08;
const CONTROL: i16 = 0x20;

/// What a read left off with, and what it read.
#[derive(Debug, Default, PartialEq)]
pub struct Read<'a> {
    pub keys: Vec<Option<&'a [u8]>>,
    pub values: Vec<Option<&'a [u8]>>,
    pub offsets: Vec<i64>,
    /// The first record's timestamp (ms), if any was read.
    pub first_ts: Option<i64>,
    /// Where the next read starts: the batch still being read, or the next one.
    pub pos: usize,
    /// The offset to fetch from next (past each record read, past a control batch, and a
    /// batch's end once it is read whole: compaction may have emptied its last offsets).
    pub next_offset: i64,
    /// Every whole batch in the buffer read (a truncated last one is the broker's to resend).
    pub done: bool,
}

/// Why a buffer cannot be read here.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// A batch's CRC-32C differs from its bytes' (at the batch's base offset).
    Crc(i64),
    /// The bytes do not make a batch.
    Corrupt(String),
    /// A batch aiokafka must read (compressed, or an older message format).
    Unsupported(String),
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A zig-zag varint (or varlong) at `*at`, moving past it.
fn varint(b: &[u8], at: &mut usize) -> Result<i64, Error> {
    let (mut z, mut shift) = (0u64, 0u32);
    loop {
        let byte = *b
            .get(*at)
            .ok_or_else(|| Error::Corrupt("a varint runs past the batch".into()))?;
        *at += 1;
        z |= u64::from(byte & 0x7F) << shift;
        if byte < 0x80 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            return Err(Error::Corrupt("a varint longer than 10 bytes".into()));
        }
    }
}

/// `len` bytes at `*at` (a negative length: null), moving past them.
fn bytes_at<'a>(b: &'a [u8], at: &mut usize, len: i64) -> Result<Option<&'a [u8]>, Error> {
    if len < 0 {
        return Ok(None);
    }
    let end = at
        .checked_add(len as usize)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| Error::Corrupt("a record's field runs past the batch".into()))?;
    let out = &b[*at..end];
    *at = end;
    Ok(Some(out))
}

/// The next whole batch at `pos` (None: the buffer ends, or ends within it).
fn batch_at(buf: &[u8], pos: usize) -> Result<Option<&[u8]>, Error> {
    if buf.len().saturating_sub(pos) < LOG_OVERHEAD {
        return Ok(None);
    }
    let length = i32_at(buf, pos + 8);
    if length < 0 {
        return Err(Error::Corrupt(format!(
            "a batch of negative length {length}"
        )));
    }
    let end = pos + LOG_OVERHEAD + length as usize;
    if end > buf.len() {
        return Ok(None);
    }
    let batch = &buf[pos..end];
    if batch.len() <= MAGIC_AT {
        return Err(Error::Corrupt("a batch shorter than its header".into()));
    }
    if batch[MAGIC_AT] as i8 != MAGIC {
        return Err(Error::Unsupported(format!(
            "message format v{}",
            batch[MAGIC_AT]
        )));
    }
    if batch.len() < HEADER {
        return Err(Error::Corrupt("a batch shorter than its header".into()));
    }
    if i16_at(batch, ATTRIBUTES_AT) & CODEC_MASK != 0 {
        return Err(Error::Unsupported("a compressed batch".into()));
    }
    Ok(Some(batch))
}

/// Whether every whole batch in `buf` can be read here (v2, uncompressed).
pub fn plain(buf: &[u8]) -> bool {
    let mut pos = 0;
    loop {
        match batch_at(buf, pos) {
            Ok(Some(b)) => pos += b.len(),
            Ok(None) => return true,
            Err(Error::Unsupported(_)) => return false,
            Err(_) => return true, // corrupt: read here, which says where
        }
    }
}

/// Up to `max` records from `pos` (a batch's start) whose offsets are at least `next_offset`,
/// each batch's CRC-32C checked if `check_crc`.
pub fn read(
    buf: &[u8],
    mut pos: usize,
    mut next_offset: i64,
    max: usize,
    check_crc: bool,
) -> Result<Read<'_>, Error> {
    let mut out = Read::default();
    while out.offsets.len() < max {
        let Some(batch) = batch_at(buf, pos)? else {
            out.done = true;
            break;
        };
        let base = i64_at(batch, 0);
        if check_crc && crc32c(&batch[ATTRIBUTES_AT..]) != i32_at(batch, CRC_AT) as u32 {
            return Err(Error::Crc(base));
        }
        let attributes = i16_at(batch, ATTRIBUTES_AT);
        let batch_next = base + i64::from(i32_at(batch, 23)) + 1;
        if attributes & CONTROL != 0 {
            next_offset = batch_next; // as aiokafka: the batch's end, even below the fetch offset
            pos += batch.len();
            continue;
        }
        let (first_ts, max_ts) = (i64_at(batch, 27), i64_at(batch, 35));
        let count = i32_at(batch, 57);
        let mut at = HEADER;
        let mut stopped = false;
        for i in 0..count {
            if out.offsets.len() >= max {
                stopped = true; // records left in this batch: the next read starts here again
                break;
            }
            let length = varint(batch, &mut at)?;
            let start = at;
            varint(batch, &mut at)?; // attributes: none defined for a record
            let ts_delta = varint(batch, &mut at)?;
            let offset = base + varint(batch, &mut at)?;
            let key_len = varint(batch, &mut at)?;
            let key = bytes_at(batch, &mut at, key_len)?;
            let value_len = varint(batch, &mut at)?;
            let value = bytes_at(batch, &mut at, value_len)?;
            let headers = varint(batch, &mut at)?;
            if headers < 0 {
                return Err(Error::Corrupt(format!("record {i}: {headers} headers")));
            }
            for _ in 0..headers {
                let k = varint(batch, &mut at)?;
                if k < 0 {
                    return Err(Error::Corrupt(format!(
                        "record {i}: a header key of size {k}"
                    )));
                }
                bytes_at(batch, &mut at, k)?;
                let v = varint(batch, &mut at)?;
                bytes_at(batch, &mut at, v)?;
            }
            if (at - start) as i64 != length {
                return Err(Error::Corrupt(format!(
                    "record {i}: {} bytes read of a record of {length}",
                    at - start
                )));
            }
            if offset < next_offset {
                continue; // before the fetch offset
            }
            if out.first_ts.is_none() {
                let ts = if attributes & LOG_APPEND_TIME != 0 {
                    max_ts
                } else {
                    first_ts + ts_delta
                };
                out.first_ts = Some(ts);
            }
            out.keys.push(key);
            out.values.push(value);
            out.offsets.push(offset);
            next_offset = offset + 1;
        }
        if stopped {
            break;
        }
        if at != batch.len() {
            return Err(Error::Corrupt(format!(
                "{} bytes after the batch's {count} records",
                batch.len() - at
            )));
        }
        next_offset = batch_next; // as aiokafka: the batch's end, even below the fetch offset
        pos += batch.len();
    }
    if !out.done && out.offsets.len() >= max && batch_at(buf, pos).ok().flatten().is_none() {
        out.done = true; // stopped at the end of the last whole batch
    }
    out.pos = pos;
    out.next_offset = next_offset;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{batch, split, Header};

    fn header(count: i32) -> Header {
        Header {
            count,
            timestamp_ms: 1_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        }
    }

    fn with_base(mut b: Vec<u8>, base: i64) -> Vec<u8> {
        b[..8].copy_from_slice(&base.to_be_bytes()); // the base offset is outside the CRC
        b
    }

    fn two_batches() -> Vec<u8> {
        let rows: Vec<(Option<&[u8]>, Option<&[u8]>)> = vec![
            (Some(b"a"), Some(b"1")),
            (None, Some(b"22")),
            (Some(b"c"), None),
        ];
        let mut buf = Vec::new();
        let mut base = 10;
        for (records, n) in split(rows.into_iter(), 1 << 16) {
            buf.extend(with_base(batch(&records, &header(n)), base));
            base += i64::from(n);
        }
        let more: Vec<(Option<&[u8]>, Option<&[u8]>)> = vec![(Some(b"d"), Some(b"4"))];
        for (records, n) in split(more.into_iter(), 1 << 16) {
            buf.extend(with_base(batch(&records, &header(n)), base));
        }
        buf
    }

    #[test]
    fn reads_every_record_in_order() {
        let buf = two_batches();
        let r = read(&buf, 0, 10, 100, true).unwrap();
        assert_eq!(r.offsets, vec![10, 11, 12, 13]);
        assert_eq!(r.keys, vec![Some(&b"a"[..]), None, Some(b"c"), Some(b"d")]);
        assert_eq!(
            r.values,
            vec![Some(&b"1"[..]), Some(b"22"), None, Some(b"4")]
        );
        assert_eq!(
            (r.first_ts, r.pos, r.next_offset, r.done),
            (Some(1_000), buf.len(), 14, true)
        );
    }

    #[test]
    fn goes_on_where_it_stopped_and_skips_before_the_fetch_offset() {
        let buf = two_batches();
        let first = read(&buf, 0, 11, 1, true).unwrap();
        assert_eq!(
            (first.offsets.clone(), first.pos, first.done),
            (vec![11], 0, false)
        );
        let rest = read(&buf, first.pos, first.next_offset, 10, true).unwrap();
        assert_eq!(rest.offsets, vec![12, 13]);
        assert!(rest.done);
    }

    #[test]
    fn a_truncated_last_batch_is_left() {
        let buf = two_batches();
        let r = read(&buf[..buf.len() - 3], 0, 0, 100, true).unwrap();
        assert_eq!(r.offsets, vec![10, 11, 12]);
        assert!(r.done);
    }

    #[test]
    fn a_bad_crc_names_the_batch() {
        let mut buf = two_batches();
        let value = buf.len() - 2; // the last record's value, before its header count
        buf[value] ^= 1;
        assert_eq!(read(&buf, 0, 0, 100, true), Err(Error::Crc(13)));
        assert!(read(&buf, 0, 0, 100, false).is_ok());
    }

    #[test]
    fn compressed_batches_are_aiokafkas() {
        let mut buf = two_batches();
        assert!(plain(&buf));
        buf[ATTRIBUTES_AT + 1] |= 1; // gzip
        assert!(!plain(&buf));
        assert!(matches!(
            read(&buf, 0, 0, 100, false),
            Err(Error::Unsupported(_))
        ));
    }
}
