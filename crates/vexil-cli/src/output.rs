//! Printing: aligned columns for lists, `field: value` lines for one resource, and the
//! server's JSON as is. Everything goes through [`Out`], so a closed pipe is an error the
//! caller can ignore instead of a panic inside `println!`.

use std::io::Write;

use serde_json::Value;

use crate::Error;
use crate::cli::Output;

/// Standard output in the chosen format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) format: Output,
}

/// One column of a table: its heading and how to read the cell from a row's JSON.
pub(crate) type Column = (&'static str, fn(&Value) -> String);

impl Out {
    /// Writes text followed by a newline.
    pub(crate) fn line(&self, text: &str) -> Result<(), Error> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(Error::io("cannot write to standard output"))
    }

    /// Writes JSON, pretty.
    pub(crate) fn json(&self, v: &Value) -> Result<(), Error> {
        self.line(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
    }

    /// A list: `items` as a table, or the whole answer as JSON.
    pub(crate) fn list(&self, answer: &Value, columns: &[Column]) -> Result<(), Error> {
        match self.format {
            Output::Json => self.json(answer),
            Output::Table => self.line(&table(items(answer), columns)),
        }
    }

    /// One resource: `field: value` lines, or JSON.
    pub(crate) fn one(&self, v: &Value) -> Result<(), Error> {
        match self.format {
            Output::Json => self.json(v),
            Output::Table => self.line(&describe(v)),
        }
    }

    /// The outcome of a command without a body (a delete): a sentence on a table terminal,
    /// nothing in JSON mode (where an empty output is easier for scripts than prose).
    pub(crate) fn done(&self, sentence: &str) -> Result<(), Error> {
        match self.format {
            Output::Json => Ok(()),
            Output::Table => self.line(sentence),
        }
    }
}

/// The `items` array of a list answer.
pub(crate) fn items(answer: &Value) -> &[Value] {
    answer
        .get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Columns padded to their widest cell; the last column is not padded.
pub(crate) fn table(rows: &[Value], columns: &[Column]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, f)| one_line(&f(r))).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let headings: Vec<String> = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
    std::iter::once(&headings)
        .chain(&cells)
        .map(|row| {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Table cells stay on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

/// `field: value` lines for an object's top-level fields, nested values as compact JSON.
pub(crate) fn describe(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return text(v);
    };
    let width = obj.keys().map(|k| k.chars().count()).max().unwrap_or(0) + 1;
    obj.iter()
        .map(|(k, v)| {
            let shown = if k.ends_with("At") {
                v.as_i64().map_or_else(|| text(v), time)
            } else {
                text(v)
            };
            format!("{:<width$} {shown}", format!("{k}:"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as a cell: strings bare, null empty, the rest as compact JSON.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A field of a row as a cell.
pub(crate) fn field(row: &Value, name: &str) -> String {
    row.get(name).map(text).unwrap_or_default()
}

/// A field of a row as compact JSON (a string keeps its quotes); empty when absent.
pub(crate) fn json_field(row: &Value, name: &str) -> String {
    row.get(name).map(Value::to_string).unwrap_or_default()
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A time field of a row as a cell.
pub(crate) fn time_field(row: &Value, name: &str) -> String {
    row.get(name)
        .and_then(Value::as_i64)
        .map(time)
        .unwrap_or_default()
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm; a date crate for one function is not worth the dependency).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(time(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = [json!({"k": "a", "v": 1}), json!({"k": "long-key", "v": 22})];
        let cols: [Column; 2] = [("KEY", |r| field(r, "k")), ("V", |r| field(r, "v"))];
        assert_eq!(
            table(&rows, &cols),
            "KEY       V\na         1\nlong-key  22"
        );
    }
}
