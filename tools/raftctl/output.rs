//! Hand-written JSON strings and plain-text tables.

use std::fmt::Write as _;

/// `bytes` as a JSON string literal, quotes included. Invalid UTF-8 becomes U+FFFD.
pub fn json_string(bytes: &[u8]) -> String {
    crate::json::json_str(&String::from_utf8_lossy(bytes))
}

/// Left-aligned columns separated by two spaces. A row shorter than the header ends early; its last
/// cell runs on (used for error rows).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        let sized = if row.len() < header.len() { row.len().saturating_sub(1) } else { row.len() };
        for (width, cell) in widths.iter_mut().zip(&row[..sized]) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(json_string(b"a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_string(&[0xff]), "\"\u{fffd}\"");
    }

    #[test]
    fn table_columns_align_and_short_rows_run_on() {
        let cells = |row: &[&str]| row.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let rows = vec![cells(&["1", "long-cell", "x", "y"]), cells(&["-", "longer-cell", "error: refused"])];
        let text = table(&["ID", "ADDRESS", "ROLE", "TERM"], &rows);
        assert_eq!(text, "ID  ADDRESS      ROLE  TERM\n1   long-cell    x     y\n-   longer-cell  error: refused\n");
    }
}
