//! `sluice sql "…"`: runs SQL against a server and prints the answer.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

#[derive(Args)]
pub struct SqlArgs {
    /// The statement(s) to run
    sql: String,
    /// The Sluice server
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    server: String,
    /// How to print the answer
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// An aligned table
    Table,
    Csv,
    Json,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(&args.server)
        .with_context(|| format!("--server {:?} is not a URL", args.server))?
        .join("v1/sql")
        .context("cannot build the SQL URL")?;
    let accept = match args.format {
        OutputFormat::Csv => "text/csv",
        OutputFormat::Table | OutputFormat::Json => "application/json",
    };
    let response = crate::client()?
        .post(url.clone())
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "sql": args.sql }).to_string())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body = response.bytes().await.context("the answer was cut off")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{message}");
    }
    match args.format {
        OutputFormat::Csv | OutputFormat::Json => print!("{}", String::from_utf8_lossy(&body)),
        OutputFormat::Table => {
            let answer: Value = serde_json::from_slice(&body).context("the answer is not JSON")?;
            print!("{}", table(&answer));
        }
    }
    Ok(())
}

/// An answer `{"columns": [{"name"}], "rows": [[…]]}` as an aligned text table.
fn table(answer: &Value) -> String {
    let names: Vec<String> = answer["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return "OK\n".to_string();
    }
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .map(|r| r.iter().map(cell).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([names[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!(" {}\n", padded.join(" | ").trim_end())
    };
    let mut out = line(&names);
    out.push_str(&format!(
        "-{}-\n",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    ));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn answers_print_as_aligned_tables() {
        let answer = json!({"columns": [{"name": "ticker"}, {"name": "n"}], "rows": [["AAPL", 12], ["B", null]]});
        assert_eq!(
            super::table(&answer),
            " ticker | n\n--------+----\n AAPL   | 12\n B      |\n(2 rows)\n"
        );
        assert_eq!(super::table(&json!({"columns": [], "rows": []})), "OK\n");
    }
}
