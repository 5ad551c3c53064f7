//! Parquet export through the low-level column writers (no Arrow): one row group
//! per `ROW_GROUP_ROWS` rows, uncompressed (this build has no codecs), with
//! dictionary encoding, which keeps the repeated run ids and names small.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use ::parquet::basic::{ConvertedType, Repetition, Type as Physical};
use ::parquet::column::writer::ColumnWriter;
use ::parquet::data_type::ByteArray;
use ::parquet::errors::ParquetError;
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::types::Type;

use super::ExportError;
use crate::store::Store;

/// The tidy schema `run_id, [swept keys…], step, layer, name, value`; the swept keys (typed as
/// their values are, required) may have any name, `optim.lr` included, so the schema is built,
/// not parsed.
fn schema(keys: &[String], types: &[TableColumn]) -> Result<Type, ParquetError> {
    let field = |name: &str, physical, converted, repetition| {
        Type::primitive_type_builder(name, physical)
            .with_repetition(repetition)
            .with_converted_type(converted)
            .build()
            .map(Arc::new)
    };
    let mut fields = vec![field(
        "run_id",
        Physical::BYTE_ARRAY,
        ConvertedType::UTF8,
        Repetition::REQUIRED,
    )?];
    for (k, t) in keys.iter().zip(types) {
        let (physical, converted) = t.physical();
        fields.push(field(k, physical, converted, Repetition::REQUIRED)?);
    }
    fields.push(field(
        "step",
        Physical::INT64,
        ConvertedType::NONE,
        Repetition::REQUIRED,
    )?);
    fields.push(field(
        "layer",
        Physical::INT32,
        ConvertedType::NONE,
        Repetition::OPTIONAL,
    )?);
    fields.push(field(
        "name",
        Physical::BYTE_ARRAY,
        ConvertedType::UTF8,
        Repetition::REQUIRED,
    )?);
    fields.push(field(
        "value",
        Physical::DOUBLE,
        ConvertedType::NONE,
        Repetition::REQUIRED,
    )?);
    Type::group_type_builder("metrics")
        .with_fields(fields)
        .build()
}

/// Rows buffered before a row group is written (about 30 MB of column data).
const ROW_GROUP_ROWS: usize = 1 << 20;

/// One row group's worth of columns.
#[derive(Default)]
struct Columns {
    run_id: Vec<ByteArray>,
    /// One column per swept key, typed.
    extra: Vec<TableColumn>,
    step: Vec<i64>,
    layer: Vec<i32>,
    layer_def: Vec<i16>,
    name: Vec<ByteArray>,
    value: Vec<f64>,
}

pub(super) fn write(
    store: &Store,
    run_ids: &[String],
    out: &mut (dyn Write + Send),
    dest: &str,
) -> Result<u64, ExportError> {
    write_with(store, run_ids, &[], &[], out, dest)
}

/// Like [`write`], with one extra column per swept key after `run_id` (`extra[i]` holds run
/// i's values in `keys` order), typed by [`TableColumn::typed`].
pub(super) fn write_with(
    store: &Store,
    run_ids: &[String],
    keys: &[String],
    extra: &[Vec<String>],
    out: &mut (dyn Write + Send),
    dest: &str,
) -> Result<u64, ExportError> {
    let pq_err = |source| ExportError::Parquet {
        dest: dest.to_string(),
        source,
    };
    // Each swept key's column over all runs, typed once.
    let typed: Vec<TableColumn> = (0..keys.len())
        .map(|k| {
            let vals: Vec<&str> = (0..run_ids.len())
                .map(|i| {
                    extra
                        .get(i)
                        .and_then(|v| v.get(k))
                        .map_or("", String::as_str)
                })
                .collect();
            TableColumn::typed(&vals)
        })
        .collect();
    let schema = Arc::new(schema(keys, &typed).map_err(pq_err)?);
    let props = WriterProperties::builder()
        .set_created_by(format!("cloudchamber {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer = SerializedFileWriter::new(out, schema, Arc::new(props)).map_err(pq_err)?;
    let mut cols = Columns {
        extra: typed.iter().map(TableColumn::empty_like).collect(),
        ..Columns::default()
    };
    let mut rows = 0u64;
    // ByteArray clones share one buffer, so each distinct string is allocated once.
    let mut names: HashMap<String, ByteArray> = HashMap::new();
    for (i, id) in run_ids.iter().enumerate() {
        let run_bytes = ByteArray::from(id.as_str());
        store.for_each_metric(id, |m| {
            let layer = match m.layer {
                Some(l) => Some(i32::try_from(l).map_err(|_| {
                    pq_err(ParquetError::General(format!(
                        "layer {l} does not fit Parquet INT32"
                    )))
                })?),
                None => None,
            };
            let step = i64::try_from(m.step).map_err(|_| {
                pq_err(ParquetError::General(format!(
                    "step {} does not fit INT64",
                    m.step
                )))
            })?;
            let name = match names.get(&m.name) {
                Some(b) => b.clone(),
                None => {
                    let b = ByteArray::from(m.name.as_str());
                    names.insert(m.name, b.clone());
                    b
                }
            };
            cols.run_id.push(run_bytes.clone());
            for (col, all) in cols.extra.iter_mut().zip(&typed) {
                col.push_from(all, i);
            }
            cols.step.push(step);
            cols.layer_def.push(i16::from(layer.is_some()));
            cols.layer.extend(layer);
            cols.name.push(name);
            cols.value.push(m.value);
            rows += 1;
            if cols.step.len() >= ROW_GROUP_ROWS {
                write_row_group(&mut writer, &mut cols).map_err(pq_err)?;
            }
            Ok::<(), ExportError>(())
        })?;
    }
    if !cols.step.is_empty() {
        write_row_group(&mut writer, &mut cols).map_err(pq_err)?;
    }
    writer.close().map_err(pq_err)?;
    Ok(rows)
}

fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    cols: &mut Columns,
) -> Result<(), ParquetError> {
    let mut group = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut col) = group.next_column()? {
        // Columns come in schema order: run_id, the swept keys, step, layer, name, value.
        let k = cols.extra.len();
        match (index, col.untyped()) {
            (0, ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(&cols.run_id, None, None)?;
            }
            (i, w) if (1..=k).contains(&i) => cols.extra[i - 1].write(w)?,
            (i, ColumnWriter::Int64ColumnWriter(w)) if i == k + 1 => {
                w.write_batch(&cols.step, None, None)?;
            }
            (i, ColumnWriter::Int32ColumnWriter(w)) if i == k + 2 => {
                w.write_batch(&cols.layer, Some(&cols.layer_def), None)?;
            }
            (i, ColumnWriter::ByteArrayColumnWriter(w)) if i == k + 3 => {
                w.write_batch(&cols.name, None, None)?;
            }
            (i, ColumnWriter::DoubleColumnWriter(w)) if i == k + 4 => {
                w.write_batch(&cols.value, None, None)?;
            }
            _ => {
                return Err(ParquetError::General(format!(
                    "unexpected column {index} in the export schema"
                )))
            }
        }
        col.close()?;
        index += 1;
    }
    group.close()?;
    // Keep the allocations for the next row group.
    cols.run_id.clear();
    cols.extra.iter_mut().for_each(TableColumn::clear);
    cols.step.clear();
    cols.layer.clear();
    cols.layer_def.clear();
    cols.name.clear();
    cols.value.clear();
    Ok(())
}

/// One column of a small table (a `summarize` result), or a row group's swept-key column.
#[derive(Clone, Debug, PartialEq)]
pub enum TableColumn {
    Str(Vec<String>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
}

impl TableColumn {
    /// A column of swept values (as the store records them, `format_value` text) typed as the
    /// values are: whole numbers → INT64, any other numbers → DOUBLE, true/false → BOOLEAN,
    /// anything else (strings, inline tables) → UTF8; so pandas sorts and groups `optim.lr`
    /// numerically. Values written as floats but whole (`1.0` is recorded as `1`) read as
    /// INT64 when every value of the column is whole.
    pub fn typed(values: &[&str]) -> TableColumn {
        let ints: Option<Vec<i64>> = values.iter().map(|v| v.parse().ok()).collect();
        if let Some(v) = ints {
            return TableColumn::I64(v);
        }
        let floats: Option<Vec<f64>> = values
            .iter()
            .map(|v| v.parse::<f64>().ok().filter(|_| !v.is_empty()))
            .collect();
        if let Some(v) = floats {
            // "nan"/"inf" spelled as words stay numbers too: TOML writes them so.
            return TableColumn::F64(v);
        }
        let bools: Option<Vec<bool>> = values.iter().map(|v| v.parse().ok()).collect();
        if let Some(v) = bools {
            return TableColumn::Bool(v);
        }
        TableColumn::Str(values.iter().map(|v| v.to_string()).collect())
    }

    fn physical(&self) -> (Physical, ConvertedType) {
        match self {
            TableColumn::Str(_) => (Physical::BYTE_ARRAY, ConvertedType::UTF8),
            TableColumn::I64(_) => (Physical::INT64, ConvertedType::NONE),
            TableColumn::F64(_) => (Physical::DOUBLE, ConvertedType::NONE),
            TableColumn::Bool(_) => (Physical::BOOLEAN, ConvertedType::NONE),
        }
    }

    /// An empty column of the same type (a row group's buffer).
    fn empty_like(&self) -> TableColumn {
        match self {
            TableColumn::Str(_) => TableColumn::Str(Vec::new()),
            TableColumn::I64(_) => TableColumn::I64(Vec::new()),
            TableColumn::F64(_) => TableColumn::F64(Vec::new()),
            TableColumn::Bool(_) => TableColumn::Bool(Vec::new()),
        }
    }

    /// Appends element `i` of `from` (a column of the same type).
    fn push_from(&mut self, from: &TableColumn, i: usize) {
        match (self, from) {
            (TableColumn::Str(a), TableColumn::Str(b)) => a.push(b[i].clone()),
            (TableColumn::I64(a), TableColumn::I64(b)) => a.push(b[i]),
            (TableColumn::F64(a), TableColumn::F64(b)) => a.push(b[i]),
            (TableColumn::Bool(a), TableColumn::Bool(b)) => a.push(b[i]),
            _ => unreachable!("buffers are made with empty_like"),
        }
    }

    fn clear(&mut self) {
        match self {
            TableColumn::Str(v) => v.clear(),
            TableColumn::I64(v) => v.clear(),
            TableColumn::F64(v) => v.clear(),
            TableColumn::Bool(v) => v.clear(),
        }
    }

    /// Writes the whole column to a column writer of its type.
    fn write(&self, col: &mut ColumnWriter<'_>) -> Result<(), ParquetError> {
        match (self, col) {
            (TableColumn::Str(v), ColumnWriter::ByteArrayColumnWriter(w)) => {
                let bytes: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
                w.write_batch(&bytes, None, None)?;
            }
            (TableColumn::I64(v), ColumnWriter::Int64ColumnWriter(w)) => {
                w.write_batch(v, None, None)?;
            }
            (TableColumn::F64(v), ColumnWriter::DoubleColumnWriter(w)) => {
                w.write_batch(v, None, None)?;
            }
            (TableColumn::Bool(v), ColumnWriter::BoolColumnWriter(w)) => {
                w.write_batch(v, None, None)?;
            }
            _ => return Err(ParquetError::General("column writer type mismatch".into())),
        }
        Ok(())
    }
}

/// Writes a small table (one row group, all columns required) with any column names — a
/// swept key like `optim.lr` included.
pub fn write_table(
    out: &mut (dyn Write + Send),
    columns: &[(String, TableColumn)],
) -> Result<(), ParquetError> {
    let fields = columns
        .iter()
        .map(|(name, col)| {
            let (physical, converted) = col.physical();
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::REQUIRED)
                .with_converted_type(converted)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let schema = Arc::new(
        Type::group_type_builder("table")
            .with_fields(fields)
            .build()?,
    );
    let props = WriterProperties::builder()
        .set_created_by(format!("cloudchamber {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writer = SerializedFileWriter::new(out, schema, Arc::new(props))?;
    let mut group = writer.next_row_group()?;
    let mut i = 0;
    while let Some(mut col) = group.next_column()? {
        columns[i]
            .1
            .write(col.untyped())
            .map_err(|e| ParquetError::General(format!("column {i}: {e}")))?;
        col.close()?;
        i += 1;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use ::parquet::file::reader::{FileReader, SerializedFileReader};
    use ::parquet::record::Field;

    use crate::export::{export, export_to_path, ExportFormat};
    use crate::store::{MetricRow, Store};

    #[test]
    fn reads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("cc.db")).unwrap();
        let m = |step, layer, name: &str, value| MetricRow {
            step,
            layer,
            name: name.into(),
            value,
        };
        let rows_a = vec![
            m(0, None, "loss", 2.5),
            m(0, Some(0), "w_norm", f64::NAN),
            m(0, Some(3), "w_norm", f64::INFINITY),
            m(7, None, "loss", -0.0),
            m(7, Some(0), "w_norm", f64::NEG_INFINITY),
        ];
        let rows_b = vec![m(1, None, "loss", 1e-300), m(2, None, "loss", 1.0 / 3.0)];
        s.begin_run("a", "a", "", "", "").unwrap();
        s.append_metrics("a", &rows_a).unwrap();
        s.begin_run("b", "b", "", "", "").unwrap();
        s.append_metrics("b", &rows_b).unwrap();
        s.begin_run("empty", "empty", "", "", "").unwrap();

        let ids: Vec<String> = ["a", "empty", "b"].map(String::from).to_vec();
        let path = dir.path().join("out.parquet");
        assert_eq!(
            export_to_path(&s, &ids, ExportFormat::Parquet, &path).unwrap(),
            7
        );

        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 7);
        let mut got = Vec::new();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let f: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
            let (Field::Str(run), Field::Long(step), Field::Str(name), Field::Double(value)) =
                (f[0], f[1], f[3], f[4])
            else {
                panic!("{row:?}")
            };
            let layer = match f[2] {
                Field::Null => None,
                Field::Int(l) => Some(*l as u32),
                other => panic!("{other:?}"),
            };
            got.push((
                run.clone(),
                MetricRow {
                    step: *step as u64,
                    layer,
                    name: name.clone(),
                    value: *value,
                },
            ));
        }
        let want: Vec<(String, MetricRow)> = rows_a
            .iter()
            .map(|r| ("a".to_string(), r.clone()))
            .chain(rows_b.iter().map(|r| ("b".to_string(), r.clone())))
            .collect();
        assert_eq!(got.len(), want.len());
        for ((gr, g), (wr, w)) in got.iter().zip(&want) {
            assert_eq!(
                (gr, g.step, g.layer, &g.name),
                (wr, w.step, w.layer, &w.name)
            );
            assert!(
                g.value.to_bits() == w.value.to_bits() || g.value.is_nan() && w.value.is_nan(),
                "{g:?} vs {w:?}"
            );
        }

        // Streaming into any writer gives the same bytes as the file.
        let mut buf = Vec::new();
        export(&s, &ids, ExportFormat::Parquet, &mut buf).unwrap();
        assert_eq!(buf, std::fs::read(&path).unwrap());
    }

    /// Swept values typed as they are: whole numbers, numbers, booleans, else text.
    #[test]
    fn swept_values_are_typed() {
        use super::TableColumn as C;
        assert_eq!(C::typed(&["64", "128"]), C::I64(vec![64, 128]));
        assert_eq!(
            C::typed(&["3e-3", "0.03", "1"]),
            C::F64(vec![3e-3, 0.03, 1.0])
        );
        assert_eq!(C::typed(&["true", "false"]), C::Bool(vec![true, false]));
        assert_eq!(
            C::typed(&["relu", "1"]),
            C::Str(vec!["relu".into(), "1".into()])
        );
        assert_eq!(
            C::typed(&["{ init = 0.1 }"]),
            C::Str(vec!["{ init = 0.1 }".into()])
        );
        assert_eq!(C::typed(&[""]), C::Str(vec!["".into()]));
    }

    #[test]
    fn empty_export_is_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("cc.db")).unwrap();
        let path = dir.path().join("none.parquet");
        assert_eq!(
            export_to_path(&s, &[], ExportFormat::Parquet, &path).unwrap(),
            0
        );
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .num_columns(),
            5
        );
    }
}
