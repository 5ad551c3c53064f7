//! CSV export: RFC 4180, header `run_id,step,layer,name,value`, an empty field
//! for a whole-network layer, and floats that parse back to the same bits.

use std::io::{self, BufWriter, Write};

use super::ExportError;
use crate::store::Store;

pub(super) fn write(
    store: &Store,
    run_ids: &[String],
    out: &mut dyn Write,
    dest: &str,
) -> Result<u64, ExportError> {
    write_with(store, run_ids, &[], &[], out, dest)
}

/// Like [`write`], with extra columns after `run_id` (a sweep's swept keys), one row of
/// values per run.
pub(super) fn write_with(
    store: &Store,
    run_ids: &[String],
    extra_header: &[String],
    extra: &[Vec<String>],
    out: &mut dyn Write,
    dest: &str,
) -> Result<u64, ExportError> {
    let io_err = |source| ExportError::Io {
        dest: dest.to_string(),
        source,
    };
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut header = String::from("run_id");
    for h in extra_header {
        header.push(',');
        header.push_str(&field(h));
    }
    header.push_str(",step,layer,name,value\n");
    w.write_all(header.as_bytes()).map_err(io_err)?;
    let mut rows = 0u64;
    for (i, id) in run_ids.iter().enumerate() {
        let mut prefix = field(id).into_owned();
        for v in extra.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            prefix.push(',');
            prefix.push_str(&field(v));
        }
        store.for_each_metric(id, |m| {
            write!(w, "{prefix},{},", m.step).map_err(io_err)?;
            if let Some(layer) = m.layer {
                write!(w, "{layer}").map_err(io_err)?;
            }
            write!(w, ",{},", field(&m.name)).map_err(io_err)?;
            write_value(&mut w, m.value).map_err(io_err)?;
            w.write_all(b"\n").map_err(io_err)?;
            rows += 1;
            Ok::<(), ExportError>(())
        })?;
    }
    w.flush().map_err(io_err)?;
    Ok(rows)
}

/// Quotes a field only when it needs it (RFC 4180): every CSV the lab writes goes through here.
pub fn field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Shortest text that parses back to the same f64 (Rust's `{}` / `{:e}` are both
/// round-trip exact); scientific notation for very large or small magnitudes so
/// that 1e300 is not printed as 301 digits. NaN/inf are spelled as pandas reads them.
fn write_value(w: &mut impl Write, v: f64) -> io::Result<()> {
    if v.is_nan() {
        w.write_all(b"NaN")
    } else if v.is_infinite() {
        w.write_all(if v > 0.0 { b"inf" } else { b"-inf" })
    } else if v == 0.0 || (1e-5..1e16).contains(&v.abs()) {
        write!(w, "{v}")
    } else {
        write!(w, "{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{export, export_to_path, ExportFormat};
    use crate::store::{MetricRow, RunStatus};

    fn sample_store(dir: &std::path::Path) -> Store {
        let mut s = Store::open(&dir.join("cc.db")).unwrap();
        let m = |step, layer, name: &str, value| MetricRow {
            step,
            layer,
            name: name.into(),
            value,
        };
        s.begin_run("r1", "one", "{}", "", "0.1").unwrap();
        s.append_metrics(
            "r1",
            &[
                m(0, None, "loss", 2.5),
                m(0, Some(0), "w_norm", 0.1),
                m(0, Some(1), "w_norm", f64::NAN),
            ],
        )
        .unwrap();
        s.append_metrics(
            "r1",
            &[
                m(5, None, "loss", f64::INFINITY),
                m(5, Some(1), "w_norm", -1e-300),
            ],
        )
        .unwrap();
        s.finish_run("r1", RunStatus::Diverged, 6, 0.5, Some(5), None)
            .unwrap();
        s.begin_run("r2", "two", "{}", "", "0.1").unwrap();
        s.append_metrics(
            "r2",
            &[
                m(1, None, "a,\"b\"", f64::NEG_INFINITY),
                m(2, None, "loss", 1e300),
            ],
        )
        .unwrap();
        s.append_metrics(
            "r2",
            &[m(3, None, "loss", -0.0), m(4, None, "loss", 1.0 / 3.0)],
        )
        .unwrap();
        s
    }

    #[test]
    fn exact_text() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample_store(dir.path());
        let mut out = Vec::new();
        let n = export(&s, &["r1".into(), "r2".into()], ExportFormat::Csv, &mut out).unwrap();
        assert_eq!(n, 9);
        let want = "run_id,step,layer,name,value
r1,0,,loss,2.5
r1,0,0,w_norm,0.1
r1,0,1,w_norm,NaN
r1,5,,loss,inf
r1,5,1,w_norm,-1e-300
r2,1,,\"a,\"\"b\"\"\",-inf
r2,2,,loss,1e300
r2,3,,loss,-0
r2,4,,loss,0.3333333333333333
";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn values_round_trip_bit_exactly() {
        let mut buf = Vec::new();
        for v in [
            0.1,
            1.0 / 3.0,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            123456789.0,
            1e16,
            9.999e15,
            1e-5,
            -0.0,
        ] {
            buf.clear();
            write_value(&mut buf, v).unwrap();
            let text = std::str::from_utf8(&buf).unwrap();
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_run_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample_store(dir.path());
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "precious").unwrap();
        let err = export_to_path(&s, &["r1".into(), "zz".into()], ExportFormat::Csv, &path)
            .err()
            .unwrap();
        assert!(err.to_string().contains("zz"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            4,
            "no temp file left (db, wal, shm, out)"
        );
        assert_eq!(
            export_to_path(&s, &["r2".into()], ExportFormat::Csv, &path).unwrap(),
            4
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("run_id,"));
        // For the manual pandas check: CC_EXPORT_DIR=/some/dir cargo test
        if let Some(d) = std::env::var_os("CC_EXPORT_DIR") {
            let all = ["r1".to_string(), "r2".to_string()];
            export_to_path(
                &s,
                &all,
                ExportFormat::Csv,
                &std::path::Path::new(&d).join("sample.csv"),
            )
            .unwrap();
            export_to_path(
                &s,
                &all,
                ExportFormat::Parquet,
                &std::path::Path::new(&d).join("sample.parquet"),
            )
            .unwrap();
        }
    }
}
