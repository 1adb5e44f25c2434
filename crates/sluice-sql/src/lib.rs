//! The Sluice SQL dialect: DataFusion's SQL (parsed by `sqlparser`) plus statements for streams.
//!
//! ```sql
//! CREATE STREAM [IF NOT EXISTS] ticks (ticker TEXT NOT NULL, price DOUBLE, ts TIMESTAMP NOT NULL)
//!   WITH (shards = 4, format = 'json', event_time = 'ts', watermark = '5 seconds',
//!         partition_by = 'date(ts), hour(ts)', retention = '24 hours',
//!         retention_bytes = 1073741824);
//! DROP STREAM [IF EXISTS] ticks;
//! SHOW STREAMS;
//! DESCRIBE ticks;            -- also DESC
//! OPTIMIZE ticks;            -- compacts a lake table's small files
//! VACUUM ticks [RETAIN 168 HOURS] [DRY RUN];
//! CREATE MATERIALIZED VIEW [IF NOT EXISTS] ticks_1m [PARTITIONED BY (day)] AS SELECT …;
//! DROP MATERIALIZED VIEW [IF EXISTS] ticks_1m;
//! SHOW MATERIALIZED VIEWS;
//! CREATE SOURCE [IF NOT EXISTS] shop FROM POSTGRES 'postgres://repl@db/shop'
//!   PUBLICATION 'sluice' TABLES (public.orders, public.customers) [WITH (…)];
//! DROP SOURCE [IF EXISTS] shop;
//! SHOW SOURCES;
//! ```
//!
//! Queries may read earlier versions of lake tables: `FROM t VERSION AS OF 3`,
//! `FROM t TIMESTAMP AS OF '2026-01-05 14:30:00'` (see [`as_of`]).
//!
//! [`parse`] recognises these by their leading keywords, as DataFusion's own `DFParser` does for
//! its extensions, and hands every other statement to `sqlparser` unchanged. Errors carry the
//! line and column of the offending token.

pub mod as_of;
mod connector;
mod source;
mod stream;
mod view;

pub use as_of::AsOf;
pub use connector::{Connector, KafkaTopic, KinesisStream, Start};
pub use source::{CreateSource, PostgresSource, SourceTable};
pub use view::{CreateView, ViewDefinition};

pub use stream::{
    Column, ColumnType, CreateStream, Format, Partition, StreamDefinition, Transform,
};

use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token};

/// A statement of the dialect.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE STREAM`: a stream, its columns and options.
    CreateStream(CreateStream),
    /// `DROP STREAM [IF EXISTS] s`: drops the stream and its records.
    DropStream {
        /// The stream to drop.
        name: String,
        /// `IF EXISTS`: a missing stream is no error.
        if_exists: bool,
    },
    /// `SHOW STREAMS`: every stream, its definition and its size.
    ShowStreams,
    /// `CREATE MATERIALIZED VIEW`: a view and the query that feeds it.
    CreateView(CreateView),
    /// `DROP MATERIALIZED VIEW [IF EXISTS] v`: drops the view.
    DropView {
        /// The view to drop.
        name: String,
        /// `IF EXISTS`: a missing view is no error.
        if_exists: bool,
    },
    /// `SHOW MATERIALIZED VIEWS`: every view, what it reads and how far it is.
    ShowViews,
    /// `CREATE SOURCE … FROM POSTGRES`: a database whose tables are mirrored.
    CreateSource(CreateSource),
    /// `DROP SOURCE [IF EXISTS] s`: stops reading it, drops its replication slot and its
    /// tables' streams.
    DropSource {
        /// The source to drop.
        name: String,
        /// `IF EXISTS`: a missing source is no error.
        if_exists: bool,
    },
    /// `SHOW SOURCES`: every source, its tables, and how far each has read.
    ShowSources,
    /// `DESCRIBE s` (or `DESC s`): the columns of a stream, view or table.
    Describe {
        /// The stream, view or table described.
        name: String,
    },
    /// `OPTIMIZE [TABLE] t`: compacts a lake table's small files.
    Optimize {
        /// The lake table to compact.
        table: sqlparser::ast::ObjectName,
    },
    /// `VACUUM [TABLE] t [RETAIN n HOURS] [DRY RUN]`: deletes the files no version younger than
    /// the retention reads.
    Vacuum {
        /// The lake table to vacuum.
        table: sqlparser::ast::ObjectName,
        /// `RETAIN n HOURS`: how old a version may be and still be readable; `None` for the
        /// table's default (7 days).
        retain_hours: Option<u64>,
        /// `DRY RUN`: list the files that would be deleted, delete none.
        dry_run: bool,
    },
    /// Any other statement, for the query engine.
    Sql(Box<sqlparser::ast::Statement>),
}

impl Statement {
    /// The statement's kind, as a PostgreSQL command tag names it (`CREATE STREAM`, …).
    pub fn tag(&self) -> &'static str {
        match self {
            Statement::CreateStream(_) => "CREATE STREAM",
            Statement::DropStream { .. } => "DROP STREAM",
            Statement::ShowStreams => "SHOW STREAMS",
            Statement::CreateView(_) => "CREATE MATERIALIZED VIEW",
            Statement::DropView { .. } => "DROP MATERIALIZED VIEW",
            Statement::ShowViews => "SHOW MATERIALIZED VIEWS",
            Statement::CreateSource(_) => "CREATE SOURCE",
            Statement::DropSource { .. } => "DROP SOURCE",
            Statement::ShowSources => "SHOW SOURCES",
            Statement::Describe { .. } => "DESCRIBE",
            Statement::Optimize { .. } => "OPTIMIZE",
            Statement::Vacuum { .. } => "VACUUM",
            Statement::Sql(_) => "SQL",
        }
    }
}

/// A statement that could not be parsed or does not make sense; says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// What is wrong, ending with its position when known (`… at Line: 1, Column: 8`).
    pub message: String,
    /// The line of the offending token, when known (1-based).
    pub line: Option<u64>,
    /// The column of the offending token on `line` (1-based).
    pub column: Option<u64>,
}

impl SqlError {
    /// An error of the whole text, at no position.
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: None,
            column: None,
        }
    }

    fn at(message: impl Into<String>, location: Location) -> Self {
        let message = message.into();
        if location.line == 0 {
            return Self {
                message,
                line: None,
                column: None,
            };
        }
        Self {
            message: format!(
                "{message} at Line: {}, Column: {}",
                location.line, location.column
            ),
            line: Some(location.line),
            column: Some(location.column),
        }
    }
}

impl sluice_error::Classify for SqlError {
    fn class(&self) -> sluice_error::Class {
        sluice_error::Class::Syntax
    }

    fn code(&self) -> &'static str {
        "sql_parse_error"
    }

    fn position(&self) -> Option<sluice_error::Position> {
        Some(sluice_error::Position {
            line: self.line?,
            column: self.column?,
        })
    }
}

impl From<ParserError> for SqlError {
    fn from(e: ParserError) -> Self {
        let message = match e {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_string(),
        };
        // sqlparser ends its messages with "at Line: L, Column: C"; keep the numbers too.
        let position = sluice_error::Position::from_parser_message(&message);
        Self {
            message: message
                .strip_prefix("sql parser error: ")
                .unwrap_or(&message)
                .to_string(),
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
        }
    }
}

/// The dialect's results: every failure is an [`SqlError`].
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Parses one or more statements separated by semicolons.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    parse_statements(sql).map_err(|e| e.or_at_end_of(sql))
}

impl SqlError {
    /// A statement cut short is wrong where it ends: sqlparser does not say where that is.
    fn or_at_end_of(self, sql: &str) -> SqlError {
        if self.line.is_some() || !self.message.ends_with("found: EOF") {
            return self;
        }
        let line = sql.split('\n').count().max(1) as u64;
        let column = sql.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
        SqlError::at(self.message, Location::new(line, column))
    }
}

/// The longest SQL text taken, in bytes.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// The deepest nesting of expressions and subqueries a statement may have. Planning recurses
/// over them, and a chain of thousands of `a OR b OR …` would exhaust a thread's stack.
pub const MAX_EXPRESSION_DEPTH: usize = 500;

/// Refuses a statement nested deeper than [`MAX_EXPRESSION_DEPTH`].
pub fn check_depth<V: sqlparser::ast::Visit>(statement: &V) -> Result<()> {
    struct Depth(usize);
    impl sqlparser::ast::Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
            self.0 += 1;
            if self.0 > MAX_EXPRESSION_DEPTH {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _: &sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
            self.0 -= 1;
            std::ops::ControlFlow::Continue(())
        }
    }
    match statement.visit(&mut Depth(0)) {
        std::ops::ControlFlow::Continue(()) => Ok(()),
        std::ops::ControlFlow::Break(()) => Err(SqlError::new(format!(
            "the statement nests expressions deeper than {MAX_EXPRESSION_DEPTH}: write long \
             chains of OR as IN (…), or split the statement"
        ))),
    }
}

/// Refuses, before any parser sees it, SQL text longer than [`MAX_SQL_BYTES`]. Every door calls
/// it (through [`parse`], or itself before its own parser). The parser's time is otherwise
/// bounded by the text's length: the sqlparser built here carries upstream's fixes for the
/// statements 0.62 took exponential time on (see `vendor/sqlparser/README.md`).
pub fn check_text(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::new(format!(
            "the SQL text is {} bytes, over the limit of {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    Ok(())
}

fn parse_statements(sql: &str) -> Result<Vec<Statement>> {
    check_text(sql)?;
    let rewritten = as_of::rewrite_located(sql)?;
    parse_rewritten(&rewritten.sql).map_err(|e| match (e.line, e.column) {
        (Some(line), Some(column)) => {
            let message = e
                .message
                .rsplit_once(" at Line: ")
                .map_or(&*e.message, |(m, _)| m);
            SqlError::at(
                message,
                rewritten.written_location(Location::new(line, column)),
            )
        }
        _ => e,
    })
}

/// [`parse_statements`] of the text with its time travel rewritten: locations are in it.
fn parse_rewritten(sql: &str) -> Result<Vec<Statement>> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql)?;
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            return Ok(statements);
        }
        let statement = parse_statement(&mut parser)?;
        match &statement {
            Statement::Sql(sql) => check_depth(sql)?,
            Statement::CreateView(view) => check_depth(&view.query)?,
            _ => {}
        }
        statements.push(statement);
        let next = parser.peek_token();
        if !matches!(next.token, Token::SemiColon | Token::EOF) {
            return Err(SqlError::at(
                format!("expected end of statement, found {}", next.token),
                next.span.start,
            ));
        }
    }
}

/// Whether `sql` begins with one of the dialect's own statements (`CREATE STREAM`, `DROP
/// STREAM`, `SHOW STREAMS`, the materialized views', `DESCRIBE`, `OPTIMIZE`, `VACUUM`), for
/// SQL front ends that parse everything else themselves.
pub fn is_dialect(sql: &str) -> bool {
    let dialect = GenericDialect {};
    let Ok(mut parser) = Parser::new(&dialect).try_with_sql(sql) else {
        return false;
    };
    while parser.consume_token(&Token::SemiColon) {}
    parser.parse_keywords(&[Keyword::CREATE, Keyword::STREAM])
        || parser.parse_keywords(&[Keyword::DROP, Keyword::STREAM])
        || parser.parse_keywords(&[Keyword::CREATE, Keyword::MATERIALIZED, Keyword::VIEW])
        || parser.parse_keywords(&[Keyword::DROP, Keyword::MATERIALIZED, Keyword::VIEW])
        || parser.parse_keywords(&[Keyword::CREATE, Keyword::SOURCE])
        || parser.parse_keywords(&[Keyword::DROP, Keyword::SOURCE])
        || (parser.parse_keyword(Keyword::SHOW)
            && (parse_word(&mut parser, "STREAMS")
                || parse_word(&mut parser, "SOURCES")
                || (parser.parse_keyword(Keyword::MATERIALIZED)
                    && parse_word(&mut parser, "VIEWS"))))
        || parser
            .parse_one_of_keywords(&[Keyword::DESCRIBE, Keyword::DESC])
            .is_some()
        || parse_word(&mut parser, "OPTIMIZE")
        || parse_word(&mut parser, "VACUUM")
}

fn parse_statement(parser: &mut Parser) -> Result<Statement> {
    let start = parser.peek_token();
    if parser.parse_keywords(&[Keyword::CREATE, Keyword::STREAM]) {
        return stream::parse_create_stream(parser).map(Statement::CreateStream);
    }
    if parser.parse_keywords(&[Keyword::DROP, Keyword::STREAM]) {
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = stream::parse_stream_name(parser)?;
        return Ok(Statement::DropStream { name, if_exists });
    }
    if parser.parse_keywords(&[Keyword::CREATE, Keyword::MATERIALIZED, Keyword::VIEW]) {
        return view::parse_create_view(parser).map(Statement::CreateView);
    }
    if parser.parse_keywords(&[Keyword::DROP, Keyword::MATERIALIZED, Keyword::VIEW]) {
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = stream::parse_stream_name(parser)?;
        return Ok(Statement::DropView { name, if_exists });
    }
    if parser.parse_keywords(&[Keyword::CREATE, Keyword::SOURCE]) {
        return source::parse_create_source(parser).map(Statement::CreateSource);
    }
    if parser.parse_keywords(&[Keyword::DROP, Keyword::SOURCE]) {
        let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = stream::parse_stream_name(parser)?;
        return Ok(Statement::DropSource { name, if_exists });
    }
    if parser.parse_keyword(Keyword::SHOW) {
        if parse_word(parser, "STREAMS") {
            return Ok(Statement::ShowStreams);
        }
        if parse_word(parser, "SOURCES") {
            return Ok(Statement::ShowSources);
        }
        if parser.parse_keyword(Keyword::MATERIALIZED) {
            if parse_word(parser, "VIEWS") {
                return Ok(Statement::ShowViews);
            }
            let at = parser.peek_token().span.start;
            return Err(SqlError::at("expected SHOW MATERIALIZED VIEWS", at));
        }
        parser.prev_token();
    }
    if parser
        .parse_one_of_keywords(&[Keyword::DESCRIBE, Keyword::DESC])
        .is_some()
    {
        let name = stream::parse_stream_name(parser)?;
        return Ok(Statement::Describe { name });
    }
    if parse_word(parser, "OPTIMIZE") {
        let _ = parser.parse_keyword(Keyword::TABLE);
        let table = parser.parse_object_name(false)?;
        return Ok(Statement::Optimize { table });
    }
    if parse_word(parser, "VACUUM") {
        let _ = parser.parse_keyword(Keyword::TABLE);
        let table = parser.parse_object_name(false)?;
        let mut retain_hours = None;
        if parse_word(parser, "RETAIN") {
            let at = parser.peek_token().span.start;
            let hours = parser.parse_literal_uint()?;
            if !parse_word(parser, "HOURS") {
                return Err(SqlError::at("expected RETAIN n HOURS", at));
            }
            retain_hours = Some(hours);
        }
        let dry_at = parser.peek_token().span.start;
        let dry_run = parse_word(parser, "DRY");
        if dry_run && !parse_word(parser, "RUN") {
            return Err(SqlError::at("expected DRY RUN", dry_at));
        }
        return Ok(Statement::Vacuum {
            table,
            retain_hours,
            dry_run,
        });
    }
    debug_assert_eq!(parser.peek_token(), start);
    Ok(Statement::Sql(Box::new(parser.parse_statement()?)))
}

/// Consumes a word that is not one of sqlparser's keywords (e.g. `STREAMS`).
fn parse_word(parser: &mut Parser, word: &str) -> bool {
    match &parser.peek_token().token {
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
            parser.next_token();
            true
        }
        _ => false,
    }
}

/// `name` as a double-quoted identifier.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` as an identifier that reads back as `name`: as it is when it is a plain one (letters,
/// digits and `_`, not starting with a digit), else double-quoted.
pub(crate) fn identifier(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match plain {
        true => name.to_string(),
        false => quoted(name),
    }
}

#[cfg(test)]
mod tests;
