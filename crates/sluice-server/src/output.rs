//! Answers of `POST /v1/sql` in the format the client asks for with `Accept`: JSON
//! (`{"columns": [{"name", "type"}], "rows": [[…]]}`, the default), CSV with a header
//! (`text/csv`), or an Arrow IPC stream (`application/vnd.apache.arrow.stream`).

use std::sync::Arc;

use crate::HttpError;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sluice_query::arrow::array::RecordBatch;
use sluice_query::arrow::datatypes::{Schema, SchemaRef};
use sluice_query::arrow::{csv, ipc, json as arrow_json};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    pub fn from_accept(headers: &HeaderMap) -> Format {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains(ARROW_STREAM) {
            Format::Arrow
        } else if accept.contains("text/csv") {
            Format::Csv
        } else {
            Format::Json
        }
    }
}

/// Keeps the first `max` rows of `batches`; true if it dropped any.
pub fn truncate(batches: &mut Vec<RecordBatch>, max: usize) -> bool {
    let mut left = max;
    let mut dropped = false;
    for batch in batches.iter_mut() {
        if batch.num_rows() > left {
            *batch = batch.slice(0, left);
            dropped = true;
        }
        left -= batch.num_rows();
    }
    batches.retain(|b| b.num_rows() > 0);
    dropped
}

/// The answer in `format`; `truncated` says that rows were left out (see [`truncate`]).
pub fn respond(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    truncated: bool,
) -> Result<Response, HttpError> {
    let failed = |e: sluice_query::arrow::error::ArrowError| {
        HttpError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )
    };
    let (content_type, body) = match format {
        Format::Json => {
            let mut answer = json_answer(schema, batches).map_err(failed)?;
            if truncated {
                answer["truncated"] = Value::Bool(true);
            }
            ("application/json", answer.to_string().into_bytes())
        }
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .with_header(true)
                .build(Vec::new());
            if batches.is_empty() {
                writer
                    .write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(failed)?;
            }
            for batch in batches {
                writer.write(batch).map_err(failed)?;
            }
            ("text/csv; charset=utf-8", writer.into_inner())
        }
        Format::Arrow => {
            let mut writer =
                ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(failed)?;
            for batch in batches {
                writer.write(batch).map_err(failed)?;
            }
            writer.finish().map_err(failed)?;
            (ARROW_STREAM, writer.into_inner().map_err(failed)?)
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if truncated {
        headers.insert("x-sluice-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `{"columns": [{"name", "type"}], "rows": [[…]]}`, values as arrow-json writes them.
pub fn json_answer(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Value, sluice_query::arrow::error::ArrowError> {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    // arrow-json writes objects keyed by column name; columns go by position instead, so that
    // two columns of one name (`SELECT a.x, b.x`) both survive.
    let positional = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(i.to_string()))
            .collect::<Vec<_>>(),
    ));
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    for batch in batches {
        writer.write(&RecordBatch::try_new(
            positional.clone(),
            batch.columns().to_vec(),
        )?)?;
    }
    writer.finish()?;
    let objects: Vec<Map<String, Value>> =
        serde_json::from_slice(&writer.into_inner()).unwrap_or_default();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|mut object| {
            Value::Array(
                (0..schema.fields().len())
                    .map(|i| object.remove(&i.to_string()).unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    Ok(json!({"columns": columns, "rows": rows}))
}
