//! Aligned text tables for terminal output.
//!
//! Columns are separated by two spaces and aligned by display width, so a
//! justification in Japanese lines up with one in English. Every cell goes
//! through [`one_line`](crate::text::one_line) and may be capped to a
//! maximum width, beyond which it is cut with "…".

use crate::text::{one_line, pad, truncate, width};

const SEPARATOR: &str = "  ";

/// A table under construction: headers, rows, and per-column width caps.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<String>,
    /// `Some(n)`: cells of that column are cut to `n` columns.
    caps: Vec<Option<usize>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (shown as given) and no caps.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            caps: vec![None; headers.len()],
            rows: Vec::new(),
        }
    }

    /// A table whose rows are label/value pairs and that has no header line.
    pub(crate) fn key_value() -> Self {
        Self::new(&[])
    }

    /// Cut cells of `column` to at most `max` terminal columns.
    pub(crate) fn cap(mut self, column: usize, max: usize) -> Self {
        if let Some(cap) = self.caps.get_mut(column) {
            *cap = Some(max);
        }
        self
    }

    /// Appends one row; missing cells are blank, extra cells are kept.
    pub(crate) fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let row = cells
            .into_iter()
            .enumerate()
            .map(|(column, cell)| {
                let cell = one_line(cell.as_ref());
                match self.caps.get(column).copied().flatten() {
                    Some(max) => truncate(&cell, max),
                    None => cell,
                }
            })
            .collect();
        self.rows.push(row);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row ending in a newline, no trailing
    /// spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in self.lines() {
            for (column, cell) in line.iter().enumerate() {
                widths[column] = widths[column].max(width(cell));
            }
        }

        let mut text = String::new();
        for line in self.lines() {
            let last = line.len().saturating_sub(1);
            let mut rendered = String::new();
            for (column, cell) in line.iter().enumerate() {
                if column > 0 {
                    rendered.push_str(SEPARATOR);
                }
                if column == last {
                    rendered.push_str(cell);
                } else {
                    rendered.push_str(&pad(cell, widths[column]));
                }
            }
            text.push_str(rendered.trim_end());
            text.push('\n');
        }
        text
    }

    fn lines(&self) -> impl Iterator<Item = &Vec<String>> {
        let header = (!self.headers.is_empty()).then_some(&self.headers);
        header.into_iter().chain(self.rows.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terminal column at which the `column`-th cell of `line` starts.
    fn column_start(line: &str, cell: &str) -> usize {
        let byte = line.find(cell).expect("cell is on the line");
        width(&line[..byte])
    }

    #[test]
    fn columns_align_by_display_width_with_japanese_text() {
        let mut table = Table::new(&["ID", "REASON", "STATE"]);
        table.row(["r-1", "障害対応のため", "pending"]);
        table.row(["r-2", "fix replication", "active"]);
        table.row(["r-3", "🚑 hotfix", "ended"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let starts: Vec<usize> = [
            (lines[0], "STATE"),
            (lines[1], "pending"),
            (lines[2], "active"),
            (lines[3], "ended"),
        ]
        .iter()
        .map(|(line, cell)| column_start(line, cell))
        .collect();
        assert!(starts.iter().all(|start| *start == starts[0]), "{text}");
        // "fix replication" is the widest reason (15 columns) and sets the width.
        assert_eq!(starts[0], 3 + 2 + 15 + 2);
    }

    #[test]
    fn capped_cells_are_cut_and_stay_aligned() {
        let mut table = Table::new(&["REASON", "BY"]).cap(0, 10);
        table.row(["本番データベースの緊急メンテナンス", "alice"]);
        table.row(["short", "bob"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains('…'), "{text}");
        // The cut cell is 9 columns (four 2-column characters and "…"), the widest.
        assert_eq!(column_start(lines[1], "alice"), 11);
        assert_eq!(column_start(lines[2], "bob"), 11);
        assert_eq!(column_start(lines[0], "BY"), 11);
    }

    #[test]
    fn lines_have_no_trailing_spaces() {
        let mut table = Table::new(&["A", "B"]);
        table.row(["long value", ""]);
        for line in table.render().lines() {
            assert_eq!(line, line.trim_end());
        }
    }

    #[test]
    fn key_value_tables_have_no_header() {
        let mut table = Table::key_value();
        table.row(["name", "alice"]);
        table.row(["display name", "アリス"]);
        assert_eq!(
            table.render(),
            "name          alice\ndisplay name  アリス\n"
        );
    }
}
