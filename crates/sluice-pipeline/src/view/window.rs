//! Event-time windows: `TUMBLE`, `HOP` and `SESSION` in a view's `FROM`, and how records are
//! given their windows.
//!
//! | in `FROM` | each record's windows (`window_start`, `window_end`) |
//! | --- | --- |
//! | `TUMBLE(s, ts, size)` | the one `[k·size, (k+1)·size)` holding `ts` |
//! | `HOP(s, ts, slide, size)` | every `[k·slide, k·slide + size)` holding `ts` (the record is repeated for each) |
//! | `SESSION(s, ts, gap)` | `[ts, ts + gap)` for now; a key's overlapping windows then merge into sessions ([`merge_sessions`]) |
//!
//! Windows are aligned on the epoch (UTC), so a window is the same whichever record opened it;
//! `window_start` is inclusive and `window_end` exclusive.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;

use super::watermark::Micros;
use crate::{PipelineError, Result};

/// The most windows of a HOP an event counts in.
const MAX_HOPS: i64 = 1000;

/// The column holding a row's window's start (inclusive).
pub const WINDOW_START: &str = "window_start";
/// The column holding a row's window's end (exclusive): the watermark must pass it
/// before the window's row is written.
pub const WINDOW_END: &str = "window_end";

/// A kind of window and its sizes, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `TUMBLE`: windows one after another, each `size` long.
    Tumble {
        /// How long each window is.
        size: Micros,
    },
    /// `HOP`: windows `size` long, one starting every `slide`, so that they overlap.
    Hop {
        /// How far apart windows start.
        slide: Micros,
        /// How long each window is.
        size: Micros,
    },
    /// `SESSION`: a key's events closer than `gap` to each other, as one window.
    Session {
        /// How long without an event closes a session.
        gap: Micros,
    },
}

impl Window {
    /// The window function `name` (`tumble`, `hop`, `session`) with its size arguments.
    pub fn from_call(name: &str, sizes: &[Expr]) -> Result<Window> {
        let sizes = sizes
            .iter()
            .map(|e| interval(name, e))
            .collect::<Result<Vec<_>>>()?;
        let window = match (name, sizes.as_slice()) {
            ("tumble", &[size]) => Window::Tumble { size },
            ("hop", &[slide, size]) if size < slide => {
                return Err(unsupported(
                    "HOP's size must be at least its slide: HOP(stream, time, slide, size)".into(),
                ));
            }
            ("hop", &[slide, size]) if size / slide > MAX_HOPS => {
                return Err(unsupported(format!(
                    "HOP's size is at most {MAX_HOPS} times its slide (each event counts in \
                     size / slide windows)"
                )));
            }
            ("hop", &[slide, size]) => Window::Hop { slide, size },
            ("session", &[gap]) => Window::Session { gap },
            _ => {
                return Err(unsupported(format!(
                    "{} takes {}",
                    name.to_uppercase(),
                    usage(name)
                )));
            }
        };
        Ok(window)
    }

    /// Whether a record's windows are only known once its key's other records are (sessions).
    pub fn is_session(self) -> bool {
        matches!(self, Window::Session { .. })
    }

    /// `batch` with `window_start` and `window_end` added, from its timestamp column at
    /// `time`: one row per record and window (HOP repeats a record for each of its windows).
    /// Rows without an event time have been taken out before.
    pub fn assign(
        self,
        batch: &RecordBatch,
        time: usize,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let times = batch
            .column(time)
            .as_primitive::<TimestampMicrosecondType>();
        let (rows, starts, ends): (RecordBatch, Vec<i64>, Vec<i64>) = match self {
            Window::Tumble { size } => {
                let starts: Vec<i64> = times
                    .values()
                    .iter()
                    .map(|&t| t - t.rem_euclid(size))
                    .collect();
                let ends = starts.iter().map(|s| s + size).collect();
                (batch.clone(), starts, ends)
            }
            Window::Session { gap } => {
                let starts: Vec<i64> = times.values().to_vec();
                let ends = starts.iter().map(|s| s + gap).collect();
                (batch.clone(), starts, ends)
            }
            Window::Hop { slide, size } => {
                let (mut indices, mut starts) = (Vec::new(), Vec::new());
                for (row, &t) in times.values().iter().enumerate() {
                    let last = t - t.rem_euclid(slide);
                    let mut start = last;
                    while start > t - size {
                        start -= slide;
                    }
                    // `start` is now the first window start that does not hold `t`.
                    start += slide;
                    while start <= last {
                        indices.push(row as u32);
                        starts.push(start);
                        start += slide;
                    }
                }
                let rows = take_record_batch(batch, &UInt32Array::from(indices))?;
                let ends = starts.iter().map(|s| s + size).collect();
                (rows, starts, ends)
            }
        };
        // An input that has windows already (a windowed view) gets these instead.
        let mut columns: Vec<ArrayRef> = rows
            .schema()
            .fields()
            .iter()
            .zip(rows.columns())
            .filter(|(f, _)| !is_window_column(f.name()))
            .map(|(_, c)| c.clone())
            .collect();
        let window_type = schema.field_with_name(WINDOW_START)?.data_type();
        columns.push(timestamps(starts, window_type));
        columns.push(timestamps(ends, window_type));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn usage(name: &str) -> &'static str {
    match name {
        "hop" => {
            "(stream, time column, slide, size), e.g. HOP(ticks, ts, INTERVAL '10 seconds', INTERVAL '1 minute')"
        }
        "session" => "(stream, time column, gap), e.g. SESSION(clicks, ts, INTERVAL '30 minutes')",
        _ => "(stream, time column, size), e.g. TUMBLE(ticks, ts, INTERVAL '1 minute')",
    }
}

fn is_window_column(name: &str) -> bool {
    name == WINDOW_START || name == WINDOW_END
}

/// The schema of a windowed source: the input's columns, then `window_start`, `window_end`
/// (which replace the input's own, if it has windows already: a view over a windowed view),
/// of the type of its time column, the one at `time`: `TIMESTAMP` or `TIMESTAMPTZ`.
pub fn windowed_schema(stream: &Schema, time: usize) -> SchemaRef {
    let window_type = stream.field(time).data_type().clone();
    let mut fields: Vec<Field> = stream
        .fields()
        .iter()
        .filter(|f| !is_window_column(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(WINDOW_START, window_type.clone(), false));
    fields.push(Field::new(WINDOW_END, window_type, false));
    Arc::new(Schema::new(fields))
}

/// Whether a column of type `t` may be a window's time column: a timestamp in microseconds,
/// with a zone (`TIMESTAMPTZ`, an instant) or without (`TIMESTAMP`, a wall time); either way
/// windows are counted on its microseconds from the epoch.
pub fn is_time_type(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(TimeUnit::Microsecond, _))
}

/// `values` as timestamps of type `t` (one [`is_time_type`] accepts).
fn timestamps(values: Vec<i64>, t: &DataType) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_data_type(t.clone()))
}

fn unsupported(message: String) -> PipelineError {
    PipelineError::Unsupported(message)
}

/// A window size: a positive interval of days, hours, minutes, seconds (months vary in length).
fn interval(function: &str, e: &Expr) -> Result<Micros> {
    let invalid = || {
        unsupported(format!(
            "{} takes intervals such as INTERVAL '1 minute' for its sizes, not {e}",
            function.to_uppercase()
        ))
    };
    const DAY: i64 = 86_400_000_000;
    let micros = match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            i64::from(v.days)
                .checked_mul(DAY)
                .and_then(|d| d.checked_add(v.nanoseconds / 1_000))
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => i64::from(v.days)
            .checked_mul(DAY)
            .and_then(|d| d.checked_add(i64::from(v.milliseconds) * 1_000)),
        _ => None,
    };
    // At most ten thousand years: window arithmetic on event times stays far from overflow.
    match micros {
        Some(micros) if micros > 0 && micros <= 3_650_000 * DAY => Ok(micros),
        _ => Err(invalid()),
    }
}

/// Merges the session windows of the partial aggregates `rows` (`window_start`, `window_end`
/// at `start` and `end`, the group's other columns at `keys`): per key, windows that overlap
/// become one session `[first start, last end)`. Returns the rows with their windows widened
/// to their sessions' (so that aggregating by the group columns merges each session).
pub fn merge_sessions(
    rows: &RecordBatch,
    keys: &[usize],
    start: usize,
    end: usize,
) -> Result<RecordBatch> {
    if rows.num_rows() == 0 {
        return Ok(rows.clone());
    }
    let mut order: Vec<SortColumn> = keys
        .iter()
        .map(|&k| SortColumn {
            values: rows.column(k).clone(),
            options: None,
        })
        .collect();
    order.push(SortColumn {
        values: rows.column(start).clone(),
        options: None,
    });
    let sorted = take_record_batch(rows, &lexsort_to_indices(&order, None)?)?;
    let key_rows = RowConverter::new(
        keys.iter()
            .map(|&k| SortField::new(rows.schema().field(k).data_type().clone()))
            .collect(),
    )?
    .convert_columns(
        &keys
            .iter()
            .map(|&k| sorted.column(k).clone())
            .collect::<Vec<_>>(),
    )?;
    let starts = sorted
        .column(start)
        .as_primitive::<TimestampMicrosecondType>();
    let ends = sorted
        .column(end)
        .as_primitive::<TimestampMicrosecondType>();
    let (mut new_starts, mut new_ends) =
        (vec![0i64; sorted.num_rows()], vec![0i64; sorted.num_rows()]);
    let mut session = 0;
    while session < sorted.num_rows() {
        // One session: rows of the same key while each starts before the session's end.
        let (first, mut last, mut session_end) = (session, session, ends.value(session));
        while last + 1 < sorted.num_rows()
            && key_rows.row(last + 1) == key_rows.row(first)
            && starts.value(last + 1) < session_end
        {
            last += 1;
            session_end = session_end.max(ends.value(last));
        }
        for i in first..=last {
            new_starts[i] = starts.value(first);
            new_ends[i] = session_end;
        }
        session = last + 1;
    }
    let mut columns = sorted.columns().to_vec();
    columns[start] = timestamps(new_starts, sorted.column(start).data_type());
    columns[end] = timestamps(new_ends, sorted.column(end).data_type());
    Ok(RecordBatch::try_new(sorted.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    const S: i64 = 1_000_000;
    const TIME: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

    fn events(keys: &[&str], times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", TIME.clone(), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                timestamps(times.to_vec(), &TIME),
            ],
        )
        .unwrap()
    }

    fn windows(batch: &RecordBatch) -> Vec<(i64, i64)> {
        let s = batch
            .column(batch.num_columns() - 2)
            .as_primitive::<TimestampMicrosecondType>();
        let e = batch
            .column(batch.num_columns() - 1)
            .as_primitive::<TimestampMicrosecondType>();
        s.values()
            .iter()
            .zip(e.values())
            .map(|(&s, &e)| (s / S, e / S))
            .collect()
    }

    #[test]
    fn tumbling_windows_are_aligned_on_the_epoch() {
        let batch = events(&["a", "a", "a"], &[0, 59 * S + 999_999, 61 * S]);
        let schema = windowed_schema(&batch.schema(), 1);
        let out = Window::Tumble { size: 60 * S }
            .assign(&batch, 1, &schema)
            .unwrap();
        assert_eq!(windows(&out), [(0, 60), (0, 60), (60, 120)]);
        // Before the epoch too.
        let out = Window::Tumble { size: 60 * S }
            .assign(&events(&["a"], &[-S]), 1, &schema)
            .unwrap();
        assert_eq!(windows(&out), [(-60, 0)]);
    }

    #[test]
    fn a_hopping_window_repeats_each_record_for_every_window_that_holds_it() {
        let batch = events(&["a", "b"], &[25 * S, 30 * S]);
        let schema = windowed_schema(&batch.schema(), 1);
        let out = Window::Hop {
            slide: 10 * S,
            size: 30 * S,
        }
        .assign(&batch, 1, &schema)
        .unwrap();
        assert_eq!(
            windows(&out),
            [(0, 30), (10, 40), (20, 50), (10, 40), (20, 50), (30, 60)]
        );
        let keys: Vec<_> = out.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, ["a", "a", "a", "b", "b", "b"]);
    }

    #[test]
    fn sessions_merge_a_keys_overlapping_windows_only() {
        let batch = events(
            &["a", "b", "a", "a", "a"],
            &[0, 5 * S, 8 * S, 30 * S, 17 * S],
        );
        let schema = windowed_schema(&batch.schema(), 1);
        let assigned = Window::Session { gap: 10 * S }
            .assign(&batch, 1, &schema)
            .unwrap();
        let merged = merge_sessions(&assigned, &[0], 2, 3).unwrap();
        // a: 0, 8, 17 chain into [0, 27); 30 starts after 27: its own. b alone.
        assert_eq!(
            windows(&merged),
            [(0, 27), (0, 27), (0, 27), (30, 40), (5, 15)]
        );
    }
}
