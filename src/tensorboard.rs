//! TensorBoard event files of a run's logged scalars, beside `metrics.jsonl` (which stays the
//! record vaezoo itself reads).
//!
//! The format is TensorBoard's: a file `events.out.tfevents.<seconds>.<host>.<pid>` of TFRecord
//! records (length, its masked CRC-32C, the payload, its masked CRC-32C), each payload a
//! serialised `tensorflow.Event` protocol buffer: first the file version `brain.Event:2`, then
//! one event per step with a `Summary` of `simple_value`s, one per numeric metric. A resumed
//! run writes a new file that starts with a `SessionLog` START at the checkpoint's step, which
//! tells TensorBoard to drop the older files' events past that step (those a killed run logged
//! after its last checkpoint), as `metrics.jsonl` drops them.
//!
//! No crate for the format is in the dependency tree (TensorBoard's are large and pull in
//! protobuf code generation), and the subset written here is small: the protobuf encoding of
//! four message types and CRC-32C.

use std::fs::{self, File};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::append::CommittedFile;
use crate::error::{Error, Result};

/// The folder of a run's event files.
pub const FOLDER: &str = "tensorboard";

/// Appends events to one event file of a run's `tensorboard/` folder. As `metrics.jsonl`'s
/// writer, it keeps only what a checkpoint covers: dropped before a [`Self::commit`], it
/// removes its file, and after one, it cuts the file back to the last commit.
pub struct EventWriter(CommittedFile);

impl EventWriter {
    /// Creates a new event file in `dir` (made if missing) and writes its version record; with
    /// `resumed_at`, a START session log at that step follows (see the module documentation).
    pub fn create(dir: &Path, resumed_at: Option<u64>) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let host = hostname();
        let (secs, pid) = (wall_time() as u64, std::process::id());
        // A name taken by an earlier session of this process (a second resume in the same
        // second) gets a counter, as TensorBoard's own writers do.
        let mut n = 0;
        let (path, file) = loop {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            let path = dir.join(format!("events.out.tfevents.{secs}.{host}.{pid}{suffix}"));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut writer = Self(CommittedFile::created(path, file));
        let mut version = Vec::new();
        put_double(&mut version, 1, wall_time());
        put_bytes(&mut version, 3, b"brain.Event:2");
        writer.record(&version)?;
        if let Some(step) = resumed_at {
            // SessionLog { status: START (1) } at `step`.
            let mut event = event_header(step);
            put_bytes(&mut event, 7, &varint_field(1, 1));
            writer.record(&event)?;
        }
        Ok(writer)
    }

    /// Writes one event at `line["step"]` with every other numeric field of the metrics line
    /// as a scalar (tag = field name); a line without a step or numbers writes nothing.
    pub fn write_metrics(&mut self, line: &Value) -> Result<()> {
        let (Some(step), Some(fields)) = (line["step"].as_u64(), line.as_object()) else {
            return Ok(());
        };
        let mut summary = Vec::new();
        for (tag, value) in fields.iter().filter(|(tag, _)| *tag != "step") {
            if let Some(x) = value.as_f64() {
                let mut scalar = Vec::new();
                put_bytes(&mut scalar, 1, tag.as_bytes());
                put_float(&mut scalar, 2, x as f32);
                put_bytes(&mut summary, 1, &scalar);
            }
        }
        if summary.is_empty() {
            return Ok(());
        }
        let mut event = event_header(step);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    /// Pushes buffered events to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }

    /// Makes the events written so far permanent (once their checkpoint is saved).
    pub fn commit(&mut self) -> Result<()> {
        self.0.commit()
    }

    /// One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload.
    fn record(&mut self, payload: &[u8]) -> Result<()> {
        let len = (payload.len() as u64).to_le_bytes();
        let mut bytes = Vec::with_capacity(payload.len() + 16);
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
        self.0.write_all(&bytes)
    }
}

/// One event read back from an event file ([`read_events`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// The step.
    pub step: u64,
    /// What the event holds.
    pub what: What,
}

/// The part of an [`Event`] this module writes.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// The file's version record.
    FileVersion(String),
    /// Scalars, as (tag, value).
    Scalars(Vec<(String, f32)>),
    /// A session log with this status (1: START).
    SessionLog(u64),
}

/// Reads an event file as TensorBoard does: every record's length and payload checked against
/// their CRCs, every payload decoded as an `Event` (fields this module does not write are
/// skipped).
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: &str| Error::Run {
        path: path.to_path_buf(),
        message: format!("is not a readable event file: {what}"),
    };
    let mut events = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let word = |b: &[u8], at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        let len_bytes = rest.get(..8).ok_or_else(|| bad("a record cut short"))?;
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        if word(rest, 8) != Some(masked_crc32c(len_bytes)) {
            return Err(bad("a length's CRC differs"));
        }
        let len = usize::try_from(len).map_err(|_| bad("a record too long"))?;
        let end = len.checked_add(16).filter(|&e| e <= rest.len());
        let end = end.ok_or_else(|| bad("a record cut short"))?;
        let payload = &rest[12..12 + len];
        if word(rest, 12 + len) != Some(masked_crc32c(payload)) {
            return Err(bad("a record's CRC differs"));
        }
        events.push(decode_event(payload).ok_or_else(|| bad("an event does not decode"))?);
        rest = &rest[end..];
    }
    Ok(events)
}

/// The fields of a protobuf message: (field number, varint or fixed value, bytes).
fn fields(mut bytes: &[u8]) -> Option<Vec<(u64, u64, &[u8])>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = take_varint(&mut bytes)?;
        let (field, wire) = (key >> 3, key & 7);
        let fixed = |bytes: &mut &[u8], n: usize| -> Option<u64> {
            let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = tail;
            Some(
                head.iter()
                    .rev()
                    .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
            )
        };
        match wire {
            0 => out.push((field, take_varint(&mut bytes)?, &[][..])),
            1 => out.push((field, fixed(&mut bytes, 8)?, &[][..])),
            5 => out.push((field, fixed(&mut bytes, 4)?, &[][..])),
            2 => {
                let len = usize::try_from(take_varint(&mut bytes)?).ok()?;
                let (head, tail) = (bytes.get(..len)?, bytes.get(len..)?);
                bytes = tail;
                out.push((field, 0, head));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Reads a varint off the front of `bytes`.
fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = bytes.split_first()?;
        *bytes = tail;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// An `Event` message.
fn decode_event(payload: &[u8]) -> Option<Event> {
    let mut event = Event {
        wall_time: 0.0,
        step: 0,
        what: What::Scalars(Vec::new()),
    };
    for (field, value, bytes) in fields(payload)? {
        match field {
            1 => event.wall_time = f64::from_bits(value),
            2 => event.step = value,
            3 => event.what = What::FileVersion(String::from_utf8(bytes.to_vec()).ok()?),
            5 => {
                let mut scalars = Vec::new();
                for (_, _, value) in fields(bytes)?.into_iter().filter(|f| f.0 == 1) {
                    let (mut tag, mut x) = (String::new(), f32::NAN);
                    for (field, bits, text) in fields(value)? {
                        match field {
                            1 => tag = String::from_utf8(text.to_vec()).ok()?,
                            2 => x = f32::from_bits(u32::try_from(bits).ok()?),
                            _ => {}
                        }
                    }
                    scalars.push((tag, x));
                }
                event.what = What::Scalars(scalars);
            }
            7 => {
                let status = fields(bytes)?.into_iter().find(|f| f.0 == 1);
                event.what = What::SessionLog(status.map_or(0, |f| f.1));
            }
            _ => {}
        }
    }
    Some(event)
}

/// An `Event`'s wall time (field 1) and step (field 2).
fn event_header(step: u64) -> Vec<u8> {
    let mut event = Vec::new();
    put_double(&mut event, 1, wall_time());
    put_varint(&mut event, (2 << 3) as u64);
    put_varint(&mut event, step);
    event
}

/// Seconds since the Unix epoch.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name (`localhost` where unknown), as it goes into event file names.
fn hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// A protobuf varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A protobuf varint field (wire type 0) as its own bytes.
fn varint_field(field: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, field << 3);
    put_varint(&mut out, value);
    out
}

/// A length-delimited field (wire type 2): strings, bytes and embedded messages.
fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A 64-bit field (wire type 1) holding a double.
fn put_double(out: &mut Vec<u8>, field: u64, value: f64) {
    put_varint(out, (field << 3) | 1);
    out.extend_from_slice(&value.to_le_bytes());
}

/// A 32-bit field (wire type 5) holding a float.
fn put_float(out: &mut Vec<u8>, field: u64, value: f32) {
    put_varint(out, (field << 3) | 5);
    out.extend_from_slice(&value.to_le_bytes());
}

/// The CRC-32C (Castagnoli) of `bytes`, masked as TFRecord stores it.
fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a time.
fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // The check value of CRC-32C, and RFC 3720's test vectors (B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn events_read_back_as_written_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path(), Some(7)).unwrap();
        let line = serde_json::json!({"step": 7, "loss": 2.5, "kl": 0.25, "note": "x"});
        writer.write_metrics(&line).unwrap();
        writer
            .write_metrics(&serde_json::json!({"loss": 1.0}))
            .unwrap(); // no step: nothing
        writer.commit().unwrap();
        let path = writer.0.path().to_path_buf();
        drop(writer);
        let events = read_events(&path).unwrap();
        let whats: Vec<(u64, What)> = events.into_iter().map(|e| (e.step, e.what)).collect();
        assert_eq!(
            whats,
            [
                (0, What::FileVersion("brain.Event:2".into())),
                (7, What::SessionLog(1)),
                (
                    7,
                    What::Scalars(vec![("loss".into(), 2.5), ("kl".into(), 0.25)])
                ),
            ]
        );
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(read_events(&path).is_err());
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read_events(&path).is_err());
    }

    #[test]
    fn a_session_that_never_commits_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path(), None).unwrap();
        writer
            .write_metrics(&serde_json::json!({"step": 1, "loss": 2.0}))
            .unwrap();
        writer.flush().unwrap();
        drop(writer);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn protobuf_fields_encode_as_the_wire_format_says() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        put_bytes(&mut out, 1, b"loss");
        assert_eq!(out, [0x0a, 4, b'l', b'o', b's', b's']);
        let mut out = Vec::new();
        put_float(&mut out, 2, 1.0);
        assert_eq!(out, [0x15, 0, 0, 0x80, 0x3f]);
        assert_eq!(varint_field(1, 1), [0x08, 0x01]);
    }
}
