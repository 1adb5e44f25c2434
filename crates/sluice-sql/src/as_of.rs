//! Versions of a table. Time travel: `t VERSION AS OF 3` and `t TIMESTAMP AS OF '2026-01-05
//! 14:30:00'` (Delta Lake's syntax) read an earlier version of a lake table. A temporal join:
//! `JOIN rates FOR SYSTEM_TIME AS OF o.ts` (Flink's syntax, in a materialized view) joins each
//! row of `o` with the version of `rates` valid at the row's `ts`.
//!
//! sqlparser's generic dialect has no table versions, so [`rewrite`] turns the clause, before
//! anything parses the text, into a table name the query engine or the view resolves
//! ([`AsOf::parse_name`]):
//!
//! ```text
//! FROM ticks VERSION AS OF 3                          FROM "ticks@v3" AS ticks
//! FROM ticks TIMESTAMP AS OF '2026-01-05 14:30' t     FROM "ticks@2026-01-05T14:30:00Z" t
//! JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r          JOIN "rates@system_time o.ts" AS r
//! ```
//!
//! Only the clause and its table name change (so an error elsewhere keeps its position before
//! them); the table keeps its name as an alias unless it has one already. Timestamps without a
//! zone are UTC.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::{Keyword, RESERVED_FOR_TABLE_ALIAS};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::{Result, SqlError};

/// Which version of a table a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    /// The table as its commit number `n` left it.
    Version(u64),
    /// The table as its last commit at or before this instant left it.
    Timestamp(DateTime<Utc>),
    /// Per row of the other side of a join, the version valid at that row's time: this
    /// column of it (`o.ts`, as written, identifiers unquoted folded to lower case).
    SystemTime(String),
}

/// What comes between a versioned name's table and its column: `rates@system_time o.ts`.
const SYSTEM_TIME: &str = "system_time ";

impl AsOf {
    /// The name a versioned table goes by in a rewritten query: `t@v3`, `t@2026-…Z`,
    /// `t@system_time o.ts`.
    pub fn name(&self, table: &str) -> String {
        match self {
            AsOf::Version(n) => format!("{table}@v{n}"),
            AsOf::Timestamp(t) => {
                format!("{table}@{}", t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            AsOf::SystemTime(column) => format!("{table}@{SYSTEM_TIME}{column}"),
        }
    }

    /// The table and version a name made by [`AsOf::name`] stands for.
    pub fn parse_name(name: &str) -> Option<(&str, AsOf)> {
        if let Some((table, column)) = name.split_once('@')
            && let Some(column) = column.strip_prefix(SYSTEM_TIME)
        {
            return Some((table, AsOf::SystemTime(column.to_string())));
        }
        let (table, version) = name.rsplit_once('@')?;
        let as_of = match version.strip_prefix('v') {
            Some(n) => AsOf::Version(n.parse().ok()?),
            None => AsOf::Timestamp(DateTime::parse_from_rfc3339(version).ok()?.to_utc()),
        };
        Some((table, as_of))
    }
}

/// `sql` with every `VERSION AS OF n` / `TIMESTAMP AS OF '…'` after a table name turned into
/// a versioned table name; `sql` itself when it has none.
pub fn rewrite(sql: &str) -> Result<Cow<'_, str>> {
    Ok(rewrite_located(sql)?.sql)
}

/// SQL text as [`rewrite`] made it, with where it rewrote the text written: a location in it
/// (a parser's error) is told as a location in the text written.
pub struct Rewritten<'a> {
    /// The text rewritten.
    pub sql: Cow<'a, str>,
    written: &'a str,
    /// Each rewrite: its bytes in the text written, and in the text rewritten.
    splices: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Rewritten<'_> {
    /// `location` in the text rewritten as a location in the text written (a location within
    /// a rewrite: where the rewritten clause starts).
    pub fn written_location(&self, location: Location) -> Location {
        if self.splices.is_empty() || location.line == 0 {
            return location;
        }
        let at = Offsets::new(&self.sql).at(location);
        let written = match self.splices.iter().rev().find(|(_, r)| r.start <= at) {
            None => at,
            Some((w, r)) if at < r.end => w.start,
            Some((w, r)) => w.end + (at - r.end),
        };
        let before = &self.written[..written.min(self.written.len())];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location::new(
            before.matches('\n').count() as u64 + 1,
            before[line_start..].chars().count() as u64 + 1,
        )
    }
}

/// [`rewrite`], keeping where it rewrote.
pub fn rewrite_located(sql: &str) -> Result<Rewritten<'_>> {
    let unchanged = || Rewritten {
        sql: Cow::Borrowed(sql),
        written: sql,
        splices: Vec::new(),
    };
    let dialect = GenericDialect {};
    // What does not tokenize is the parser's to report.
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Ok(unchanged());
    };
    let tokens: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let offsets = Offsets::new(sql);
    let mut out = String::with_capacity(sql.len() + 16);
    let mut splices = Vec::new();
    let mut copied = 0;
    let mut i = 1;
    while i + 3 < tokens.len() {
        let Some((as_of, length)) = clause(&tokens[i..])? else {
            i += 1;
            continue;
        };
        let Token::Word(table) = &tokens[i - 1].token else {
            return Err(SqlError::at(
                "VERSION AS OF, TIMESTAMP AS OF and FOR SYSTEM_TIME AS OF follow a table name",
                tokens[i].span.start,
            ));
        };
        let has_alias = match tokens.get(i + length).map(|t| &t.token) {
            Some(Token::Word(w)) => {
                w.keyword == Keyword::AS || !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword)
            }
            _ => false,
        };
        let name = match table.quote_style {
            Some(_) => table.value.clone(),
            None => table.value.to_ascii_lowercase(),
        };
        let start = offsets.at(tokens[i - 1].span.start);
        out.push_str(&sql[copied..start]);
        let rewritten_start = out.len();
        out.push_str(&crate::quoted(&as_of.name(&name)));
        if !has_alias {
            out.push_str(" AS ");
            out.push_str(&crate::quoted(&name));
        }
        copied = offsets.at(tokens[i + length - 1].span.end);
        splices.push((start..copied, rewritten_start..out.len()));
        i += length;
    }
    if copied == 0 {
        return Ok(unchanged());
    }
    out.push_str(&sql[copied..]);
    Ok(Rewritten {
        sql: Cow::Owned(out),
        written: sql,
        splices,
    })
}

/// `VERSION AS OF <number>`, `TIMESTAMP AS OF '<timestamp>'` or `FOR SYSTEM_TIME AS OF
/// <column>` at the start of `tokens` (at least four), and how many tokens it takes.
fn clause(tokens: &[&TokenWithSpan]) -> Result<Option<(AsOf, usize)>> {
    let keyword = |t: &TokenWithSpan| match &t.token {
        Token::Word(w) if w.quote_style.is_none() => w.keyword,
        _ => Keyword::NoKeyword,
    };
    if keyword(tokens[0]) == Keyword::FOR
        && keyword(tokens[1]) == Keyword::SYSTEM_TIME
        && keyword(tokens[2]) == Keyword::AS
        && keyword(tokens[3]) == Keyword::OF
    {
        return system_time(&tokens[4..])
            .map(|(column, length)| Some((AsOf::SystemTime(column), 4 + length)))
            .ok_or_else(|| {
                SqlError::at(
                    "FOR SYSTEM_TIME AS OF takes the time column of the stream joined, e.g. \
                     JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r",
                    tokens[3].span.end,
                )
            });
    }
    let kind = keyword(tokens[0]);
    if !matches!(kind, Keyword::VERSION | Keyword::TIMESTAMP)
        || keyword(tokens[1]) != Keyword::AS
        || keyword(tokens[2]) != Keyword::OF
    {
        return Ok(None);
    }
    let at = tokens[3].span.start;
    match (kind, &tokens[3].token) {
        (Keyword::VERSION, Token::Number(n, _)) => {
            n.parse().map(|n| Some((AsOf::Version(n), 4))).map_err(|_| {
                SqlError::at(
                    format!("VERSION AS OF takes a version number, found {n}"),
                    at,
                )
            })
        }
        (Keyword::TIMESTAMP, Token::SingleQuotedString(s)) => timestamp(s)
            .map(|t| Some((AsOf::Timestamp(t), 4)))
            .ok_or_else(|| {
                SqlError::at(
                    format!(
                        "TIMESTAMP AS OF '{s}' is not a timestamp like '2026-01-05 14:30:00' or \
                         '2026-01-05T14:30:00+01:00'"
                    ),
                    at,
                )
            }),
        // Not a clause (`SELECT version AS of FROM t`), or not one the parser will accept.
        _ => Ok(None),
    }
}

/// A column, maybe qualified (`ts`, `o.ts`, `o."Ts"`), at the start of `tokens`: as written
/// (unquoted identifiers folded to lower case), and how many tokens it takes.
fn system_time(tokens: &[&TokenWithSpan]) -> Option<(String, usize)> {
    let mut column = String::new();
    let mut length = 0;
    loop {
        let Token::Word(word) = &tokens.get(length)?.token else {
            return None;
        };
        match word.quote_style {
            Some(_) => column.push_str(&crate::quoted(&word.value)),
            None => column.push_str(&word.value.to_ascii_lowercase()),
        }
        length += 1;
        match tokens.get(length).map(|t| &t.token) {
            Some(Token::Period) => {
                column.push('.');
                length += 1;
            }
            // A function's name, not a column.
            Some(Token::LParen) => return None,
            _ => return Some((column, length)),
        }
    }
}

/// An instant written as RFC 3339, or as a date or date and time in UTC.
fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Byte offsets of the tokenizer's (line, column) locations; columns count characters.
struct Offsets<'a> {
    sql: &'a str,
    lines: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut lines = vec![0];
        lines.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, lines }
    }

    fn at(&self, location: Location) -> usize {
        let start = self.lines[(location.line as usize).saturating_sub(1)];
        self.sql[start..]
            .char_indices()
            .nth((location.column as usize).saturating_sub(1))
            .map_or(self.sql.len(), |(i, _)| start + i)
    }
}
