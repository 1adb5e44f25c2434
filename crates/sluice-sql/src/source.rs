//! `CREATE SOURCE … FROM POSTGRES`: a database whose tables Sluice mirrors through logical
//! replication, each table a change stream of its own.
//!
//! ```sql
//! CREATE SOURCE [IF NOT EXISTS] shop FROM POSTGRES 'postgres://repl@db:5432/shop'
//!   PUBLICATION 'sluice' TABLES (public.orders, public.customers, sales.orders AS sales_orders)
//!   [WITH (password_env = 'SHOP_PASSWORD', slot = 'sluice_shop', snapshot = 'initial' | 'none')];
//! DROP SOURCE [IF EXISTS] shop;
//! SHOW SOURCES;
//! ```
//!
//! A table is named after the source's table: `orders` for `public.orders`, `<schema>_<table>`
//! outside `public`, or as `AS` says. The connection string holds no password: it is kept in the
//! catalog and shown, so a password in it is refused, and is given as the name of an environment
//! variable (`password_env`) or in the config file's secrets instead.

use serde::{Deserialize, Serialize};
use sqlparser::ast::{Expr, SqlOption, Value};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use crate::stream::parse_stream_name;
use crate::{Result, SqlError};

/// `CREATE SOURCE`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSource {
    /// The source's name.
    pub name: String,
    /// `IF NOT EXISTS`: an existing source of the name is no error.
    pub if_not_exists: bool,
    /// What the catalog keeps of it.
    pub definition: PostgresSource,
}

/// A PostgreSQL database read through logical replication (`pgoutput`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresSource {
    /// The connection string, without a password (`postgres://user@host:port/db?…`).
    pub url: String,
    /// The publication whose tables are read.
    pub publication: String,
    /// The tables read, each into the change stream of its name.
    pub tables: Vec<SourceTable>,
    /// The replication slot (default `sluice_<source>`): created by `CREATE SOURCE`, dropped by
    /// `DROP SOURCE`.
    pub slot: String,
    /// The environment variable holding the password, if the server needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Whether the tables' rows are copied first (`snapshot = 'initial'`, the default), or only
    /// changes from now on are read (`'none'`).
    pub snapshot: bool,
}

/// A table of the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTable {
    /// Its schema in the database.
    pub schema: String,
    /// Its name in the database.
    pub table: String,
    /// The change stream (and mirror) it is read into.
    pub name: String,
}

impl SourceTable {
    /// `schema.table`, as PostgreSQL's catalog and messages name it.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

const OPTIONS: &str = "password_env, slot, snapshot";

pub(crate) fn parse_create_source(parser: &mut Parser) -> Result<CreateSource> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name_at = parser.peek_token().span.start;
    let name = parse_stream_name(parser)?;
    expect_word(parser, "FROM", "expected FROM POSTGRES 'postgres://…'")?;
    expect_word(parser, "POSTGRES", "expected FROM POSTGRES 'postgres://…'")?;
    let url_at = parser.peek_token().span.start;
    let url = parser.parse_literal_string()?;
    check_url(&url, url_at)?;
    expect_word(parser, "PUBLICATION", "expected PUBLICATION 'name'")?;
    let publication = parser.parse_literal_string()?;
    expect_word(parser, "TABLES", "expected TABLES (schema.table, …)")?;
    parser.expect_token(&Token::LParen)?;
    let mut tables = Vec::new();
    loop {
        tables.push(parse_table(parser)?);
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.expect_token(&Token::RParen)?;
    let mut source = PostgresSource {
        url,
        publication,
        tables,
        slot: format!("sluice_{}", name.to_ascii_lowercase()),
        password_env: None,
        snapshot: true,
    };
    if parser.peek_keyword(Keyword::WITH) {
        let with_at = parser.peek_token().span.start;
        for option in parser.parse_options(Keyword::WITH)? {
            let SqlOption::KeyValue { key, value } = option else {
                return Err(SqlError::at(
                    format!("expected option = value; options are {OPTIONS}"),
                    with_at,
                ));
            };
            let at = key.span.start;
            let text = string(&value, &key.value, at)?;
            match key.value.to_ascii_lowercase().as_str() {
                "password_env" => source.password_env = Some(text),
                "slot" => source.slot = text,
                "snapshot" => {
                    source.snapshot = match text.to_ascii_lowercase().as_str() {
                        "initial" => true,
                        "none" => false,
                        other => {
                            return Err(SqlError::at(
                                format!("snapshot '{other}': use 'initial' or 'none'"),
                                at,
                            ));
                        }
                    }
                }
                other => {
                    return Err(SqlError::at(
                        format!("unknown source option '{other}': options are {OPTIONS}"),
                        at,
                    ));
                }
            }
        }
    }
    validate(&source, name_at)?;
    Ok(CreateSource {
        name,
        if_not_exists,
        definition: source,
    })
}

/// `schema.table [AS name]` (a table without a schema is in `public`).
fn parse_table(parser: &mut Parser) -> Result<SourceTable> {
    let at = parser.peek_token().span.start;
    let parts = parser.parse_object_name(false)?;
    let parts: Vec<String> = (parts.0.iter())
        .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect();
    let (schema, table) = match parts.as_slice() {
        [table] => ("public".to_string(), table.clone()),
        [schema, table] => (schema.clone(), table.clone()),
        _ => {
            return Err(SqlError::at(
                format!("expected schema.table, found '{}'", parts.join(".")),
                at,
            ));
        }
    };
    let name = match parser.parse_keyword(Keyword::AS) {
        true => parse_stream_name(parser)?,
        false if schema == "public" => table.clone(),
        false => format!("{schema}_{table}"),
    };
    Ok(SourceTable {
        schema,
        table,
        name,
    })
}

/// A connection string Sluice may keep: `postgres://` or `postgresql://`, without a password.
fn check_url(url: &str, at: Location) -> Result<()> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(SqlError::at(
            "expected a connection string 'postgres://user@host:port/database'",
            at,
        ));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let password_in_query = (url.split_once('?').map(|(_, q)| q).unwrap_or_default())
        .split('&')
        .any(|p| p.to_ascii_lowercase().starts_with("password="));
    if authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
        || password_in_query
    {
        return Err(SqlError::at(
            "the connection string holds a password, which would be kept in the catalog and \
             shown: give it as WITH (password_env = 'VARIABLE') instead",
            at,
        ));
    }
    Ok(())
}

fn validate(source: &PostgresSource, at: Location) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for t in &source.tables {
        if !names.insert(t.name.to_ascii_lowercase()) {
            return Err(SqlError::at(
                format!("two tables would be named '{}': name one with AS", t.name),
                at,
            ));
        }
    }
    let identifier = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !identifier(&source.slot) {
        return Err(SqlError::at(
            format!(
                "slot '{}': a replication slot's name has at most 63 lower-case letters, digits \
                 and underscores",
                source.slot
            ),
            at,
        ));
    }
    Ok(())
}

fn expect_word(parser: &mut Parser, word: &str, message: &str) -> Result<()> {
    match &parser.peek_token().token {
        Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word) => {
            parser.next_token();
            Ok(())
        }
        _ => Err(SqlError::at(message, parser.peek_token().span.start)),
    }
}

fn string(value: &Expr, name: &str, at: Location) -> Result<String> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Ok(s.clone()),
            _ => Err(SqlError::at(format!("{name} takes a 'string'"), at)),
        },
        _ => Err(SqlError::at(format!("{name} takes a 'string'"), at)),
    }
}
