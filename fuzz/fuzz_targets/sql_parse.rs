//! The SQL dialect's parser on arbitrary text.
//!
//! Checks: no panic (sqlparser's `debug_assert!`s are live here); an error's line is within the
//! text; every statement parsed can be printed; a materialized view's definition, which the
//! server keeps and plans again at every start, parses again, to its end, as the same query,
//! and the whole `CREATE MATERIALIZED VIEW` it prints parses again to the same definition
//! (sqlparser printed `m. 5` as `m.5`, which reads back as `m` then `.5`: such a view is now
//! refused when it is created).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_sql::{AsOf, Statement, ViewDefinition, parse};

/// The statement a view's definition prints parses again to the same definition.
fn check_round_trip(definition: &ViewDefinition) {
    let sql = definition.to_sql();
    let again = parse(&sql).unwrap_or_else(|e| panic!("view {sql:?} does not parse again: {e}"));
    match again.as_slice() {
        [Statement::CreateView(v)] => assert_eq!(&v.definition, definition),
        other => panic!("view {sql:?} parsed again as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = AsOf::parse_name(sql);
    let statements = match parse(sql) {
        Ok(statements) => statements,
        Err(e) => {
            if let Some(line) = e.line {
                let lines = sql.split('\n').count() as u64;
                assert!(
                    (1..=lines).contains(&line),
                    "error on line {line} of {lines}: {e}"
                );
            }
            return;
        }
    };
    for statement in &statements {
        let _ = format!("{statement:?}");
        match statement {
            Statement::Sql(s) => {
                let _ = s.to_string();
            }
            Statement::CreateView(view) => {
                let definition = &view.definition;
                let again = definition.parse_query().unwrap_or_else(|e| {
                    panic!("view query {:?} does not parse: {e}", definition.query)
                });
                assert_eq!(again, view.query, "view query {:?}", definition.query);
                check_round_trip(definition);
            }
            _ => {}
        }
    }
});
