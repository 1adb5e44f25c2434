//! An updating view's rows, as the lake's MERGE takes them: each changed key's new row, and a
//! row flagged for deletion for each key whose group its `HAVING` no longer lets through.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::concat_batches;

use crate::{PipelineError, Result};

/// A flag column of an upsert's rows: the key is deleted (its group no longer passes HAVING).
pub(crate) const DELETE: &str = "_sluice_delete";

/// An updating view's upsert: `upserts` with a false [`DELETE`] flag, and a row flagged true
/// (its other columns null) for each key among `changed` (the state's touched groups, whose key
/// columns are `state_keys`) that `upserts` no longer holds — a group its HAVING now filters out.
pub(super) fn with_deletes(
    upserts: Vec<RecordBatch>,
    changed: &RecordBatch,
    state_keys: &[usize],
    keys: &[String],
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Vec<RecordBatch>> {
    use arrow::array::new_null_array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::row::{RowConverter, SortField};

    let flagged_schema = {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DELETE, DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    };
    let key_types: Vec<DataType> = keys
        .iter()
        .map(|k| schema.field_with_name(k).map(|f| f.data_type().clone()))
        .collect::<Result<_, _>>()?;
    let converter = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
    let upserts = concat_batches(schema, &upserts)?;
    // The state's key columns have the query's types, the view's the lake's: compare as the latter.
    let as_keys = |columns: Vec<&ArrayRef>| -> Result<Vec<ArrayRef>> {
        columns
            .into_iter()
            .zip(&key_types)
            .map(|(c, t)| Ok(arrow::compute::cast(c, t)?))
            .collect()
    };
    let upserted_keys = as_keys(
        keys.iter()
            .map(|k| {
                upserts
                    .column_by_name(k)
                    .ok_or_else(|| PipelineError::Internal(format!("no key column {k}")))
            })
            .collect::<Result<_>>()?,
    )?;
    let changed_keys = as_keys(state_keys.iter().map(|&i| changed.column(i)).collect())?;
    let present = converter.convert_columns(&upserted_keys)?;
    let present: std::collections::HashSet<&[u8]> = present.iter().map(|r| r.data()).collect();
    let candidates = converter.convert_columns(&changed_keys)?;
    let gone: BooleanArray = candidates
        .iter()
        .map(|r| Some(!present.contains(r.data())))
        .collect();
    let mut out = Vec::new();
    if upserts.num_rows() > 0 {
        let mut columns = upserts.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(vec![
            false;
            upserts.num_rows()
        ])));
        out.push(RecordBatch::try_new(flagged_schema.clone(), columns)?);
    }
    let deleted = gone.true_count();
    if deleted > 0 {
        let columns = schema
            .fields()
            .iter()
            .map(|f| match keys.iter().position(|k| k == f.name()) {
                Some(i) => Ok(arrow::compute::filter(&changed_keys[i], &gone)?),
                None => Ok(new_null_array(f.data_type(), deleted)),
            })
            .chain(std::iter::once(Ok(
                Arc::new(BooleanArray::from(vec![true; deleted])) as _,
            )))
            .collect::<Result<Vec<_>>>()?;
        out.push(RecordBatch::try_new(flagged_schema, columns)?);
    }
    Ok(out)
}
