//! `CREATE MATERIALIZED VIEW`: its parse, and the definition a view keeps.
//!
//! ```sql
//! CREATE MATERIALIZED VIEW [IF NOT EXISTS] ticks_1m [PARTITIONED BY (trade_date)] AS
//!   SELECT ticker, window_start, window_end, count(*) AS trades
//!   FROM TUMBLE(ticks, ts, INTERVAL '1 minute') GROUP BY ticker, window_start, window_end;
//! DROP MATERIALIZED VIEW [IF EXISTS] ticks_1m;
//! SHOW MATERIALIZED VIEWS;
//! ```
//!
//! The dialect checks only the statement's frame (a name, the partition columns, a query);
//! what the query may be is the pipelines' to say, when they plan it.

use serde::{Deserialize, Serialize};
use sqlparser::ast;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::stream::parse_stream_name;
use crate::{Result, SqlError};

/// What a view keeps of its `CREATE MATERIALIZED VIEW`: enough to plan it again at every start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDefinition {
    /// The view's name: its lake table's too.
    pub name: String,
    /// The view table's partition columns, outermost first (columns of the query's output).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// The query, as sqlparser prints it (so that two spellings of one query compare equal).
    pub query: String,
}

impl ViewDefinition {
    /// The query, parsed again — all of it: text left after the query is an error, never
    /// ignored (a view must never run less than its query).
    pub fn parse_query(&self) -> Result<Box<ast::Query>> {
        parse_whole_query(&self.query)
    }

    /// The statement that creates this view.
    pub fn to_sql(&self) -> String {
        let partitioned = match self.partition_by.as_slice() {
            [] => String::new(),
            columns => {
                let columns: Vec<String> = columns.iter().map(|c| crate::identifier(c)).collect();
                format!(" PARTITIONED BY ({})", columns.join(", "))
            }
        };
        format!(
            "CREATE MATERIALIZED VIEW {}{partitioned} AS {}",
            self.name, self.query
        )
    }
}

/// `CREATE MATERIALIZED VIEW`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateView {
    /// `IF NOT EXISTS`: an existing view of the name is no error.
    pub if_not_exists: bool,
    /// What the view keeps, its query as printed.
    pub definition: ViewDefinition,
    /// The query as parsed, for the pipelines to plan.
    pub query: Box<ast::Query>,
}

/// Parses what follows `CREATE MATERIALIZED VIEW`.
pub(crate) fn parse_create_view(parser: &mut Parser) -> Result<CreateView> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parse_stream_name(parser)?;
    let mut partition_by = Vec::new();
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        parser.expect_token(&Token::LParen)?;
        partition_by = parser
            .parse_comma_separated(|p| p.parse_identifier())?
            .into_iter()
            .map(|ident| ident.value)
            .collect();
        parser.expect_token(&Token::RParen)?;
    }
    let at = parser.peek_token().span.start;
    if !parser.parse_keyword(Keyword::AS) {
        return Err(SqlError::at(
            format!(
                "expected AS SELECT … after the view's name, found {}",
                parser.peek_token().token
            ),
            at,
        ));
    }
    let start = parser.peek_token().span.start;
    let query = parser.parse_query()?;
    let printed = query.to_string();
    if !reads_back(&printed, &query) {
        return Err(SqlError::at(
            format!(
                "the view's query cannot be kept as written: printed, it reads `{printed}`, \
                 which is not the same query; write it otherwise (e.g. without spaces inside \
                 a qualified name)"
            ),
            start,
        ));
    }
    Ok(CreateView {
        if_not_exists,
        definition: ViewDefinition {
            name,
            partition_by,
            query: printed,
        },
        query,
    })
}

/// Whether `printed`, what sqlparser prints of `query`, parses back whole to `query` itself. A
/// view keeps its query as printed and plans it again at every start, so the two must be one.
fn reads_back(printed: &str, query: &ast::Query) -> bool {
    parse_whole_query(printed).is_ok_and(|again| *again == *query)
}

/// Parses `sql` as one query, to its end.
fn parse_whole_query(sql: &str) -> Result<Box<ast::Query>> {
    let dialect = sqlparser::dialect::GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql)?;
    let query = parser.parse_query()?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(SqlError::at(
            format!("expected the end of the query, found {}", next.token),
            next.span.start,
        ));
    }
    Ok(query)
}
