//! Plain-text tables for humans: columns padded to their widest cell, two spaces apart, no
//! borders, so they read well and `grep`/`awk` still work. Cells never hold secret values.

/// A table built row by row, then rendered.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
    right_aligned: Vec<bool>,
}

impl Table {
    /// A table with this header row.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let header: Vec<String> = header.into_iter().map(Into::into).collect();
        let right_aligned = vec![false; header.len()];
        Self {
            rows: vec![header],
            right_aligned,
        }
    }

    /// Right-aligns column `index` (numbers, sizes).
    pub fn align_right(mut self, index: usize) -> Self {
        if let Some(flag) = self.right_aligned.get_mut(index) {
            *flag = true;
        }
        self
    }

    /// Adds a row; missing cells render empty.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Number of data rows (the header excluded).
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// True when there is no data row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table as lines ending in `\n`, trailing spaces trimmed.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width.saturating_sub(cell.chars().count());
                if self.right_aligned.get(i).copied().unwrap_or(false) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A byte count for humans in binary units, as the docs and the size flags (`64MiB`) write
/// them: `812 B`, `1.5 KiB`, `3.2 MiB`. The one size formatter of every human output.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut table = Table::new(["KIND", "SIZE"]).align_right(1);
        table.row(["secret", "12"]);
        table.row(["certificate", "1234"]);
        assert_eq!(
            table.render(),
            "KIND         SIZE\nsecret         12\ncertificate  1234\n"
        );
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn human_sizes_use_binary_units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(2 * 1024 * 1024), "2.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
