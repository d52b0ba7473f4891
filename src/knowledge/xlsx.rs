//! Excel workbooks (`.xlsx`) as knowledge-base files: content teams keep FAQs in Excel,
//! and QnA Maker and 云小蜜 import and export it.
//!
//! Every non-empty sheet is one table with the same columns as a CSV file (English or
//! Chinese names, see `COLUMNS`), so a workbook is read exactly like CSV files would
//! be. Problems name the file, the sheet, the row and the column (`sheet "FAQ", cell
//! C7: …`, at line 7 column 3), because a content editor fixes them in Excel, not in a
//! text editor.

use std::path::Path;

use calamine::{Data, Reader, Xlsx};

use super::{issue, table_entries, Loaded, COLUMNS};

/// Spreadsheet column letters: 1 → A, 27 → AA.
fn column_name(mut n: usize) -> String {
    let mut s = Vec::new();
    while n > 0 {
        let d = (n - 1) % 26;
        s.push(b'A' + d as u8);
        n = (n - 1) / 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// A cell as the text a CSV export would hold. Dates become `YYYY-MM-DD` (what
/// `valid_from`/`valid_until` take); whole numbers lose Excel's `.0`.
fn cell_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => excel_date(dt.as_f64()).unwrap_or_else(|| dt.as_f64().to_string()),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// An Excel serial day number (1900 date system) as `YYYY-MM-DD`.
fn excel_date(serial: f64) -> Option<String> {
    let epoch = time::Date::from_calendar_date(1899, time::Month::December, 30).ok()?;
    let d = epoch.checked_add(time::Duration::days(serial.floor() as i64))?;
    Some(format!(
        "{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    ))
}

pub(super) fn load_xlsx(path: &Path) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return (
                Vec::new(),
                vec![issue(path, 1, None, format!("cannot read: {e}"))],
            )
        }
    };
    let mut book: Xlsx<_> = match calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)) {
        Ok(b) => b,
        Err(e) => {
            return (
                Vec::new(),
                vec![issue(
                    path,
                    1,
                    None,
                    format!("not a readable .xlsx workbook: {e}"),
                )],
            )
        }
    };
    let mut entries = Vec::new();
    let mut issues = Vec::new();
    let mut tables = 0;
    for sheet in book.sheet_names() {
        let range = match book.worksheet_range(&sheet) {
            Ok(r) => r,
            Err(e) => {
                issues.push(issue(
                    path,
                    1,
                    None,
                    format!("sheet \"{sheet}\": cannot be read: {e}"),
                ));
                continue;
            }
        };
        // Row and column numbers as Excel shows them (1-based, from A1).
        let Some((first_row, first_col)) = range.start() else {
            continue; // an empty sheet
        };
        let mut rows = range.rows().enumerate().map(|(i, r)| {
            (
                first_row as usize + i + 1,
                r.iter()
                    .map(|c| cell_text(c).trim().to_owned())
                    .collect::<Vec<_>>(),
            )
        });
        // The header is the first row naming at least two known columns, so a title
        // row or a note above the table is skipped; failing that, the first non-empty
        // row (whose unknown names are then reported).
        let all: Vec<(usize, Vec<String>)> = rows
            .by_ref()
            .take(20)
            .filter(|(_, r)| r.iter().any(|c| !c.is_empty()))
            .collect();
        let known = |r: &[String]| {
            r.iter()
                .filter(|c| {
                    let c = c.to_lowercase();
                    COLUMNS.iter().any(|(_, names)| names.contains(&c.as_str()))
                })
                .count()
        };
        let Some(at) = all
            .iter()
            .position(|(_, r)| known(r) >= 2)
            .or(if all.is_empty() { None } else { Some(0) })
        else {
            continue;
        };
        let (header_line, headers) = all[at].clone();
        let rows = all.into_iter().skip(at + 1).chain(rows);
        // Trailing empty header cells are formatting, not columns.
        let width = headers
            .iter()
            .rposition(|h| !h.is_empty())
            .map_or(0, |i| i + 1);
        let headers = headers[..width].to_vec();
        let data: Vec<(usize, Vec<String>)> = rows
            .filter(|(_, r)| r.iter().any(|c| !c.is_empty()))
            .map(|(line, mut r)| {
                r.resize(width, String::new());
                (line, r)
            })
            .collect();
        tables += 1;
        let before = issues.len();
        let (found, mut problems) = table_entries(path, header_line, &headers, data);
        entries.extend(found);
        issues.append(&mut problems);
        // Columns of the table are counted from its first cell; name the sheet and the
        // cell as Excel shows them.
        for i in &mut issues[before..] {
            if let Some(c) = i.location.column.as_mut() {
                *c += first_col as usize;
                i.message = format!(
                    "sheet \"{sheet}\", cell {}{}: {}",
                    column_name(*c),
                    i.location.line,
                    i.message
                );
            } else {
                i.message = format!("sheet \"{sheet}\", row {}: {}", i.location.line, i.message);
            }
        }
    }
    if tables == 0 && issues.is_empty() {
        issues.push(issue(
            path,
            1,
            None,
            "the workbook has no sheet with entries",
        ));
    }
    (entries, issues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_named_as_in_excel() {
        assert_eq!(column_name(1), "A");
        assert_eq!(column_name(26), "Z");
        assert_eq!(column_name(27), "AA");
        assert_eq!(column_name(53), "BA");
    }

    #[test]
    fn cells_read_like_a_csv_export() {
        assert_eq!(cell_text(&Data::Float(3.0)), "3");
        assert_eq!(cell_text(&Data::Float(2.5)), "2.5");
        assert_eq!(excel_date(46023.0).as_deref(), Some("2026-01-01"));
    }
}
