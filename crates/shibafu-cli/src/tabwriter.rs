//! Go's `text/tabwriter` as docker configures it for tables
//! (`NewWriter(out, 10, 1, 3, ' ', 0)`): tab-terminated cells are padded to the
//! widest cell of their column block plus 3, at least 10; the last cell of a line is
//! written as is.

pub struct TabWriter {
    pub min_width: usize,
    pub padding: usize,
}

impl Default for TabWriter {
    fn default() -> Self {
        TabWriter {
            min_width: 10,
            padding: 3,
        }
    }
}

impl TabWriter {
    /// Aligns `text` (lines separated by '\n', cells by '\t').
    pub fn format(&self, text: &str) -> String {
        let trailing_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<Vec<&str>> = if text.is_empty() {
            Vec::new()
        } else {
            body.split('\n').map(|l| l.split('\t').collect()).collect()
        };
        let mut out = String::new();
        let mut widths = Vec::new();
        self.block(&lines, 0, lines.len(), &mut widths, &mut out);
        if !trailing_newline && out.ends_with('\n') {
            out.pop();
        }
        out
    }

    fn write_lines(
        &self,
        lines: &[Vec<&str>],
        from: usize,
        to: usize,
        widths: &[usize],
        out: &mut String,
    ) {
        for line in &lines[from..to] {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if j + 1 < line.len() {
                    // a terminated cell
                    let w = widths.get(j).copied().unwrap_or(0);
                    let len = cell.chars().count();
                    if w > len {
                        out.extend(std::iter::repeat_n(' ', w - len));
                    }
                }
            }
            out.push('\n');
        }
    }

    /// Go's recursive `format`: a column block is a run of consecutive lines that
    /// all have a terminated cell in this column.
    fn block(
        &self,
        lines: &[Vec<&str>],
        mut line0: usize,
        line1: usize,
        widths: &mut Vec<usize>,
        out: &mut String,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            self.write_lines(lines, line0, this, widths, out);
            line0 = this;
            let mut width = self.min_width;
            while this < line1 {
                let line = &lines[this];
                if column + 1 >= line.len() {
                    break;
                }
                let w = line[column].chars().count() + self.padding;
                if w > width {
                    width = w;
                }
                this += 1;
            }
            widths.push(width);
            self.block(lines, line0, this, widths, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, line0, line1, widths, out);
    }
}

/// Renders rows (header first) the way docker's default tables look.
pub fn table(rows: &[Vec<String>]) -> String {
    let text: String = rows.iter().map(|r| format!("{}\n", r.join("\t"))).collect();
    TabWriter::default().format(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_like_docker() {
        let out = table(&[
            vec!["DRIVER".into(), "VOLUME NAME".into()],
            vec!["local".into(), "data".into()],
        ]);
        assert_eq!(out, "DRIVER    VOLUME NAME\nlocal     data\n");
    }

    #[test]
    fn widest_cell_plus_padding() {
        let out = table(&[
            vec!["CONTAINER ID".into(), "IMAGE".into(), "NAMES".into()],
            vec!["0123456789ab".into(), "busybox:latest".into(), "web".into()],
        ]);
        assert_eq!(
            out,
            "CONTAINER ID   IMAGE            NAMES\n0123456789ab   busybox:latest   web\n"
        );
    }

    #[test]
    fn unicode_counts_as_one_cell() {
        let out = table(&[
            vec!["\"sleep…\"".into(), "x".into()],
            vec!["a".into(), "y".into()],
        ]);
        assert_eq!(out, "\"sleep…\"   x\na          y\n");
    }

    #[test]
    fn column_blocks_are_independent() {
        // The middle line has no tab: it ends the first block.
        let out = TabWriter::default().format("a\tb\nplain\nlonger-cell-here\tc\n");
        assert_eq!(out, "a         b\nplain\nlonger-cell-here   c\n");
    }
}
