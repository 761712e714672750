//! TensorBoard event files (`events.out.tfevents.*`), written and read without TensorFlow.
//!
//! The format is TensorFlow's: a sequence of TFRecords (`u64` length, masked CRC32C of the
//! length, the payload, masked CRC32C of the payload), each payload an `Event` protobuf
//! (`tensorflow/core/util/event.proto`): `wall_time` (1, double), `step` (2, int64) and either
//! `file_version` (3, string; the first record, `brain.Event:2`) or a `Summary` (5). A `Summary`
//! (`tensorflow/core/framework/summary.proto`) holds `Value`s: `tag` (1) with `simple_value` (2,
//! float), an `Image` (4: height 1, width 2, colorspace 3, PNG bytes 4), or a text `tensor` (8)
//! with the `text` plugin's metadata (9).
//!
//! The protobuf encoding is written by hand: these few messages do not justify a code generator
//! (and `protoc` at build time). [`read_events`] parses the same subset back, checking every CRC;
//! `vsr plot` and the tests use it, and CI also reads our files with the real `tensorboard`
//! package.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Writes one event file; every call appends a record and flushes it, so a crash loses nothing
/// that was logged.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, named like TensorFlow's
    /// (`events.out.tfevents.<seconds>.<host>`).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let host = hostname();
        // A second writer in the same second (a resumed run) must not clobber the first file.
        let mut path = dir.join(format!("events.out.tfevents.{secs}.{host}"));
        let mut n = 1;
        while path.exists() {
            path = dir.join(format!("events.out.tfevents.{secs}.{host}.{n}"));
            n += 1;
        }
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter { path, out: BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.write_record(&event)?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar (`add_scalar`).
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_float(&mut v, 2, value as f32);
        self.summary(step, &v)
    }

    /// An image (`add_image`): PNG-encoded RGB, `width` x `height`.
    pub fn image(&mut self, tag: &str, step: u64, width: usize, height: usize, png: &[u8]) -> Result<()> {
        let mut img = Vec::new();
        put_varint_field(&mut img, 1, height as u64);
        put_varint_field(&mut img, 2, width as u64);
        put_varint_field(&mut img, 3, 3); // RGB
        put_bytes(&mut img, 4, png);
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 4, &img);
        self.summary(step, &v)
    }

    /// Markdown text (`add_text`), shown in TensorBoard's Text tab.
    pub fn text(&mut self, tag: &str, step: u64, text: &str) -> Result<()> {
        // SummaryMetadata { plugin_data { plugin_name: "text" } }
        let mut plugin = Vec::new();
        put_bytes(&mut plugin, 1, b"text");
        let mut meta = Vec::new();
        put_bytes(&mut meta, 1, &plugin);
        // TensorProto { dtype: DT_STRING (7), tensor_shape: {} (scalar), string_val: [text] }
        let mut tensor = Vec::new();
        put_varint_field(&mut tensor, 1, 7);
        put_bytes(&mut tensor, 2, &[]);
        put_bytes(&mut tensor, 8, text.as_bytes());
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 9, &meta);
        put_bytes(&mut v, 8, &tensor);
        self.summary(step, &v)
    }

    fn summary(&mut self, step: u64, value: &[u8]) -> Result<()> {
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, value);
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&rec).and_then(|_| self.out.flush()).map_err(|e| Error::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

// ---- protobuf encoding (the subset we need) ----

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, (field as u64) << 3);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_varint(out, ((field as u64) << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u32, v: f32) {
    put_varint(out, ((field as u64) << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, ((field as u64) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

// ---- CRC32C (Castagnoli), as TFRecord masks it ----

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32C: [u32; 256] = crc32c_table();

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

// ---- reading ----

/// One value of a summary event, as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f32),
    /// Width, height and the encoded image.
    Image { width: u32, height: u32, png: Vec<u8> },
    Text(String),
}

/// One summary value with its event's step and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub step: u64,
    pub wall_time: f64,
    pub tag: String,
    pub value: Value,
}

/// Every summary value of an event file, in order; checks the file version record and every CRC.
/// A record cut short at the end of the file (a crash while writing) ends the list quietly, as
/// TensorBoard does; a damaged record anywhere else is an error.
pub fn read_events(path: &Path) -> Result<Vec<Record>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: String| Error::Tensors { path: path.to_path_buf(), reason: what };
    let mut out = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos < bytes.len() {
        if bytes.len() - pos < 12 {
            break;
        }
        let len_bytes = &bytes[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        if crc != masked_crc32c(len_bytes) {
            return Err(bad(format!("record at byte {pos}: length CRC mismatch")));
        }
        let start = pos + 12;
        if bytes.len() < start + len + 4 {
            break;
        }
        let data = &bytes[start..start + len];
        let crc = u32::from_le_bytes(bytes[start + len..start + len + 4].try_into().unwrap());
        if crc != masked_crc32c(data) {
            return Err(bad(format!("record at byte {pos}: data CRC mismatch")));
        }
        pos = start + len + 4;
        let event = parse_event(data).map_err(|e| bad(format!("record at byte {pos}: {e}")))?;
        if first {
            if event.file_version.as_deref() != Some("brain.Event:2") {
                return Err(bad("first record is not a `brain.Event:2` file version".into()));
            }
            first = false;
            continue;
        }
        for (tag, value) in event.values {
            out.push(Record { step: event.step, wall_time: event.wall_time, tag, value });
        }
    }
    if first {
        return Err(bad("not a TensorBoard event file (no records)".into()));
    }
    Ok(out)
}

#[derive(Default)]
struct Event {
    wall_time: f64,
    step: u64,
    file_version: Option<String>,
    values: Vec<(String, Value)>,
}

/// A protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn fields(mut data: &[u8]) -> std::result::Result<Vec<(u32, Field<'_>)>, String> {
    fn varint(data: &mut &[u8]) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first().ok_or("truncated varint")?;
            *data = rest;
            v |= ((b & 0x7F) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn take<'a>(data: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if data.len() < n {
            return Err("truncated field".into());
        }
        let (a, b) = data.split_at(n);
        *data = b;
        Ok(a)
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let field = (key >> 3) as u32;
        let f = match key & 7 {
            0 => Field::Varint(varint(&mut data)?),
            1 => Field::Fixed64(take(&mut data, 8)?.try_into().unwrap()),
            2 => {
                let n = varint(&mut data)? as usize;
                Field::Bytes(take(&mut data, n)?)
            }
            5 => Field::Fixed32(take(&mut data, 4)?.try_into().unwrap()),
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((field, f));
    }
    Ok(out)
}

fn parse_event(data: &[u8]) -> std::result::Result<Event, String> {
    let mut e = Event::default();
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => e.step = v,
            (3, Field::Bytes(b)) => e.file_version = Some(String::from_utf8_lossy(b).into_owned()),
            (5, Field::Bytes(summary)) => {
                for (n, f) in fields(summary)? {
                    if let (1, Field::Bytes(value)) = (n, f) {
                        if let Some(v) = parse_value(value)? {
                            e.values.push(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

fn parse_value(data: &[u8]) -> std::result::Result<Option<(String, Value)>, String> {
    let mut tag = String::new();
    let mut value = None;
    for (n, f) in fields(data)? {
        match (n, f) {
            (1, Field::Bytes(b)) => tag = String::from_utf8_lossy(b).into_owned(),
            (2, Field::Fixed32(b)) => value = Some(Value::Scalar(f32::from_le_bytes(b))),
            (4, Field::Bytes(img)) => {
                let (mut width, mut height, mut png) = (0, 0, Vec::new());
                for (n, f) in fields(img)? {
                    match (n, f) {
                        (1, Field::Varint(v)) => height = v as u32,
                        (2, Field::Varint(v)) => width = v as u32,
                        (4, Field::Bytes(b)) => png = b.to_vec(),
                        _ => {}
                    }
                }
                value = Some(Value::Image { width, height, png });
            }
            (8, Field::Bytes(tensor)) => {
                for (n, f) in fields(tensor)? {
                    if let (8, Field::Bytes(b)) = (n, f) {
                        value = Some(Value::Text(String::from_utf8_lossy(b).into_owned()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(value.map(|v| (tag, v)))
}

/// The event files of a run directory, oldest first (a resumed run adds a file).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.out.tfevents.")))
        .collect();
    files.sort_by_key(|p| (std::fs::metadata(p).and_then(|m| m.modified()).ok(), p.clone()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answers() {
        // RFC 3720 test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("train/loss", 3, 0.25).unwrap();
        w.image("images/pred", 7, 2, 1, b"\x89PNGfake").unwrap();
        w.text("config", 0, "batch: 2").unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let recs = read_events(&path).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!((recs[0].tag.as_str(), recs[0].step, &recs[0].value), ("train/loss", 3, &Value::Scalar(0.25)));
        assert_eq!(recs[1].value, Value::Image { width: 2, height: 1, png: b"\x89PNGfake".to_vec() });
        assert_eq!(recs[2].value, Value::Text("batch: 2".into()));

        // A flipped byte inside a record is caught by its CRC.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("CRC"), "{err}");

        // A record cut short at the end (crash while writing) is dropped, the rest is kept.
        bytes[n - 10] ^= 0x40;
        std::fs::write(&path, &bytes[..n - 5]).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 2);
    }
}
