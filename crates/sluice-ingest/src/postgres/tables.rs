//! What a source's tables are in the database: their columns, types and primary keys, read from
//! PostgreSQL's catalog when the source is created, and checked (each table must be in the
//! publication and have a primary key, which its updates and deletes send — replica identity
//! `DEFAULT` or `FULL`: the mirror names its rows by it).

use pg_walstream::PgReplicationConnection;
use sluice_sql::{Column, Format, PostgresSource, SourceTable, StreamDefinition};

use super::values::column_type;

/// Why a source's table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// PostgreSQL, or the connection to it.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] pg_walstream::ReplicationError),
    /// A query failed.
    #[error("PostgreSQL refused '{query}': {message}")]
    Refused {
        /// The query.
        query: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// The table is not there, or not in the publication, or has no primary key.
    #[error("table {table}: {problem}")]
    Unfit {
        /// `schema.table`.
        table: String,
        /// What is wrong.
        problem: String,
    },
}

/// A table of the source, as its change stream declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The table.
    pub table: SourceTable,
    /// The change stream's definition: its columns, `debezium`, its primary key.
    pub definition: StreamDefinition,
}

/// Reads and checks the tables of `source` through `connection` (an ordinary session).
pub fn describe(
    connection: &mut PgReplicationConnection,
    source: &PostgresSource,
) -> Result<Vec<Described>, TableError> {
    source
        .tables
        .iter()
        .map(|table| describe_one(connection, source, table))
        .collect()
}

fn describe_one(
    connection: &mut PgReplicationConnection,
    source: &PostgresSource,
    table: &SourceTable,
) -> Result<Described, TableError> {
    let unfit = |problem: String| TableError::Unfit {
        table: table.qualified(),
        problem,
    };
    let (schema, name) = (literal(&table.schema), literal(&table.table));
    let rows = query(
        connection,
        &format!(
            "SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull, \
             COALESCE(a.attnum = ANY(i.indkey), false), c.relreplident \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = {schema} AND c.relname = {name} AND c.relkind IN ('r', 'p') \
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        ),
    )?;
    if rows.is_empty() {
        return Err(unfit("no such table".into()));
    }
    let published = query(
        connection,
        &format!(
            "SELECT 1 FROM pg_publication_tables WHERE pubname = {} AND schemaname = {schema} \
             AND tablename = {name}",
            literal(&source.publication)
        ),
    )?;
    if published.is_empty() {
        return Err(unfit(format!(
            "not in publication '{}' (ALTER PUBLICATION {} ADD TABLE {})",
            source.publication,
            source.publication,
            table.qualified()
        )));
    }
    let mut columns = Vec::new();
    let mut key = Vec::new();
    for row in rows {
        let [name, type_id, modifier, not_null, in_key, identity] = row.as_slice() else {
            unreachable!("the query selects six columns");
        };
        // Updates and deletes send the old row's replica identity: the key, or every column.
        if !matches!(identity.as_str(), "d" | "f") {
            let identity = match identity.as_str() {
                "n" => "NOTHING",
                _ => "USING INDEX",
            };
            return Err(unfit(format!(
                "its replica identity is {identity}, so its updates and deletes do not send its \
                 primary key (ALTER TABLE {} REPLICA IDENTITY DEFAULT)",
                table.qualified()
            )));
        }
        let type_id = type_id.parse().unwrap_or(0);
        let modifier = modifier.parse().unwrap_or(-1);
        if in_key == "t" {
            key.push(name.clone());
        }
        columns.push(Column {
            name: name.clone(),
            data_type: column_type(type_id, modifier),
            nullable: not_null != "t",
        });
    }
    if key.is_empty() {
        return Err(unfit(
            "it has no primary key: a mirror names its rows by it (ALTER TABLE … ADD PRIMARY KEY)"
                .into(),
        ));
    }
    Ok(Described {
        table: table.clone(),
        definition: StreamDefinition {
            columns,
            format: Format::Debezium,
            primary_key: key,
            ..StreamDefinition::default()
        },
    })
}

/// The rows `sql` selects, every value as text (NULL as empty).
pub fn query(
    connection: &mut PgReplicationConnection,
    sql: &str,
) -> Result<Vec<Vec<String>>, TableError> {
    let result = connection.exec(sql)?;
    if !result.is_ok() {
        return Err(TableError::Refused {
            query: sql.to_string(),
            message: result.error_message().unwrap_or_default(),
        });
    }
    Ok((0..result.ntuples())
        .map(|row| {
            (0..result.nfields())
                .map(|col| result.get_value(row, col).unwrap_or_default())
                .collect()
        })
        .collect())
}

/// `text` as an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
