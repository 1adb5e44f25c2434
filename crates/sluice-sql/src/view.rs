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
    pub name: String,
    /// The view table's partition columns, outermost first (columns of the query's output).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// The query, as sqlparser prints it (so that two spellings of one query compare equal).
    pub query: String,
}

impl ViewDefinition {
    /// The query, parsed again.
    pub fn parse_query(&self) -> Result<Box<ast::Query>> {
        let dialect = sqlparser::dialect::GenericDialect {};
        Ok(Parser::new(&dialect)
            .try_with_sql(&self.query)?
            .parse_query()?)
    }

    /// The statement that creates this view.
    pub fn to_sql(&self) -> String {
        let partitioned = match self.partition_by.as_slice() {
            [] => String::new(),
            columns => format!(" PARTITIONED BY ({})", columns.join(", ")),
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
    pub if_not_exists: bool,
    pub definition: ViewDefinition,
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
    let query = parser.parse_query()?;
    Ok(CreateView {
        if_not_exists,
        definition: ViewDefinition {
            name,
            partition_by,
            query: query.to_string(),
        },
        query,
    })
}
