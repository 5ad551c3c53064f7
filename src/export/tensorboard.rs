//! TensorBoard export: one directory per run holding one event file, so `tensorboard --logdir
//! DIR` shows every run side by side.
//!
//! The file format, written by hand (no TensorFlow, no protoc): a sequence of TFRecords, each
//! `u64 length (LE) · masked CRC32C of the length · data · masked CRC32C of the data`, around
//! `Event` protocol buffers (tensorflow/core/util/event.proto). The first event carries
//! `file_version = "brain.Event:2"`; then one event per step whose `Summary` holds every scalar
//! of that step as `simple_value` (a 32-bit float: TensorBoard's scalar precision).
//!
//! Tags: `train_loss` → `train/loss`, `test_acc` → `test/acc`, `train_eval_loss` →
//! `train_eval/loss`, a per-layer metric → `layer3/act_std`, anything else keeps its name.
//! Wall time: the store keeps no per-step clock, so every event carries the run's start time
//! (TensorBoard's "relative" axis is then flat; use "step").

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use super::ExportError;
use crate::store::{RunRecord, Store, StoreError};

/// `tensorflow.Event`, the fields we write.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with its `simple_value` (field 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The CRC mask of the TFRecord format: rotate right by 15 and add a constant, so that a CRC
/// of data that itself contains CRCs stays well distributed (tensorflow/core/lib/hash/crc32c.h).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord holding `data`.
pub fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// The TensorBoard tag of a metric row.
pub fn tag(name: &str, layer: Option<u32>) -> String {
    if let Some(l) = layer {
        return format!("layer{l}/{name}");
    }
    for prefix in ["train_eval", "train", "test"] {
        if let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) {
            return format!("{prefix}/{rest}");
        }
    }
    name.to_string()
}

/// Seconds since the Unix epoch of a stored UTC timestamp `YYYY-MM-DDTHH:MM:SS[.fff]Z`
/// (days-from-civil, Howard Hinnant's algorithm); None if it is not in that form.
pub fn unix_seconds(ts: &str) -> Option<f64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = ts.trim_end_matches('Z').split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (num(t.next()?)?, num(t.next()?)?);
    let ss: f64 = t.next()?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + (hh * 3600 + mm * 60) as f64 + ss)
}

/// A directory name for a run: its name made filesystem-safe, then its id prefix (unique).
fn run_dir_name(run: &RunRecord) -> String {
    let safe = crate::names::component(&run.name);
    format!("{safe}-{}", &run.id[..run.id.len().min(8)])
}

/// Writes one event file per run under `dir`; returns the run directories and the number of
/// scalars written.
pub fn write(
    store: &Store,
    run_ids: &[String],
    dir: &Path,
) -> Result<(Vec<PathBuf>, u64), ExportError> {
    let io_err = |path: &Path| {
        let dest = path.display().to_string();
        move |source| ExportError::Io { dest, source }
    };
    let mut runs = Vec::new();
    for id in run_ids {
        let run = store.run(id)?.ok_or_else(|| StoreError::NotFound {
            path: store.path().to_path_buf(),
            query: id.clone(),
        })?;
        runs.push(run);
    }
    let mut dirs = Vec::new();
    let mut scalars = 0u64;
    for run in &runs {
        let run_dir = dir.join(run_dir_name(run));
        fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
        let wall_time =
            unix_seconds(run.started_at.as_deref().unwrap_or(&run.created_at)).unwrap_or(0.0);
        let path = run_dir.join(format!(
            "events.out.tfevents.{}.cloudchamber",
            wall_time as i64
        ));
        let mut out = BufWriter::new(fs::File::create(&path).map_err(io_err(&path))?);
        let mut buf = Vec::new();
        let mut emit = |out: &mut BufWriter<fs::File>, ev: Event| -> Result<(), ExportError> {
            buf.clear();
            ev.encode(&mut buf).map_err(|e| ExportError::Io {
                dest: path.display().to_string(),
                source: std::io::Error::other(e),
            })?;
            write_record(out, &buf).map_err(io_err(&path))
        };
        emit(
            &mut out,
            Event {
                wall_time,
                step: 0,
                what: Some(What::FileVersion("brain.Event:2".into())),
            },
        )?;
        // Rows come ordered by step: gather each step's scalars into one event.
        let mut step: Option<u64> = None;
        let mut values: Vec<SummaryValue> = Vec::new();
        let flush = |step: u64, values: &mut Vec<SummaryValue>| Event {
            wall_time,
            step: step as i64,
            what: Some(What::Summary(Summary {
                value: std::mem::take(values),
            })),
        };
        store.for_each_metric(&run.id, |m| {
            if step.is_some_and(|s| s != m.step) && !values.is_empty() {
                let ev = flush(step.unwrap_or(0), &mut values);
                emit(&mut out, ev)?;
            }
            step = Some(m.step);
            values.push(SummaryValue {
                tag: tag(&m.name, m.layer),
                simple_value: Some(m.value as f32),
            });
            scalars += 1;
            Ok::<(), ExportError>(())
        })?;
        if let Some(s) = step {
            if !values.is_empty() {
                let ev = flush(s, &mut values);
                emit(&mut out, ev)?;
            }
        }
        out.flush().map_err(io_err(&path))?;
        dirs.push(run_dir);
    }
    Ok((dirs, scalars))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record framing of a known TFRecord: CRC32C("123456789") = 0xE3069283 (RFC 3720
    /// check value), and the masking formula gives TensorFlow's value for it.
    #[test]
    #[allow(clippy::manual_rotate)] // the mask as TensorFlow writes it, independent of ours
    fn crc_and_mask() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        let crc: u32 = 0xE306_9283;
        assert_eq!(
            masked_crc32c(b"123456789"),
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn tags_and_times() {
        assert_eq!(tag("train_loss", None), "train/loss");
        assert_eq!(tag("train_eval_acc", None), "train_eval/acc");
        assert_eq!(tag("act_std", Some(3)), "layer3/act_std");
        assert_eq!(tag("weight_norm", None), "weight_norm");
        // 2000-03-01 is day 11017 of the epoch (a leap-year February before it).
        assert_eq!(
            unix_seconds("2000-03-01T00:00:01.5Z"),
            Some(11017.0 * 86400.0 + 1.5)
        );
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix_seconds("garbage"), None);
    }

    /// The file-version event encodes to the bytes protoc gives for the same message:
    /// field 1 (fixed64 double) = 09 + 8 bytes, step 0 omitted, field 3 (string) = 1a 0d "brain.Event:2".
    #[test]
    fn file_version_event_bytes() {
        let ev = Event {
            wall_time: 1.0,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        };
        let mut b = Vec::new();
        ev.encode(&mut b).unwrap();
        let mut want = vec![0x09];
        want.extend(1.0f64.to_le_bytes());
        want.extend([0x1a, 13]);
        want.extend(b"brain.Event:2");
        assert_eq!(b, want);
    }
}
