//! Making text from the server safe and measurable on a terminal.
//!
//! Justifications, comments and names are any Unicode text written by other
//! people. Printed raw, a control character or an ANSI escape in a
//! justification could move the cursor and overwrite what an approver sees
//! (say, the target or role they are about to approve), and a bidirectional
//! override could reorder it. So everything shown goes through [`one_line`],
//! which keeps ordinary text of any script and neutralises the rest.
//! Widths are terminal columns (`unicode-width`), not bytes or chars, so
//! Japanese text and emoji line up.

use unicode_width::UnicodeWidthStr;

/// The character shown in place of a control or formatting character.
const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` would change how the terminal lays out the text around it
/// rather than print as itself.
fn is_layout_control(c: char) -> bool {
    // Bidi embeddings/overrides (U+202A..U+202E) and isolates
    // (U+2066..U+2069) can make displayed text read differently from what
    // it is; line and paragraph separators break lines.
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// `text` made safe for one terminal line: line breaks and tabs become
/// single spaces, other control and bidi-override characters become U+FFFD,
/// runs of whitespace collapse, and the ends are trimmed.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !line.is_empty() {
            line.push(' ');
        }
        pending_space = false;
        line.push(if is_layout_control(c) { REPLACEMENT } else { c });
    }
    line
}

/// How many terminal columns `text` takes.
pub(crate) fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` cut to at most `max` columns, ending in "…" when it was cut.
///
/// Measured on whole prefixes (not char by char) so that emoji sequences
/// are counted the way [`width`] counts them when the table is padded.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    // Leave one column for the ellipsis.
    let budget = max - 1;
    let mut end = 0;
    for (index, c) in text.char_indices() {
        let next = index + c.len_utf8();
        if width(&text[..next]) > budget {
            break;
        }
        end = next;
    }
    format!("{}…", text[..end].trim_end())
}

/// `text` followed by spaces up to `columns` terminal columns.
pub(crate) fn pad(text: &str, columns: usize) -> String {
    let fill = columns.saturating_sub(width(text));
    format!("{text}{}", " ".repeat(fill))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_of_any_script_is_kept() {
        assert_eq!(one_line("障害対応のため 🚑"), "障害対応のため 🚑");
        assert_eq!(one_line("إصلاح قاعدة البيانات"), "إصلاح قاعدة البيانات");
    }

    #[test]
    fn line_breaks_become_spaces() {
        assert_eq!(one_line("  first\r\n\tsecond\n"), "first second");
    }

    #[test]
    fn terminal_escapes_and_bidi_overrides_are_neutralised() {
        let shown = one_line("ok\u{1b}[2K\u{1b}[1Atarget=prod\u{202E}txt");
        assert!(!shown.contains('\u{1b}'));
        assert!(!shown.contains('\u{202E}'));
        assert_eq!(shown.matches(REPLACEMENT).count(), 3);
    }

    #[test]
    fn japanese_characters_are_two_columns_wide() {
        assert_eq!(width("障害"), 4);
        assert_eq!(width("db"), 2);
    }

    #[test]
    fn short_text_is_not_truncated() {
        assert_eq!(truncate("hello", 5), "hello");
    }

    #[test]
    fn long_text_is_truncated_with_an_ellipsis_within_the_width() {
        assert_eq!(truncate("hello world", 8), "hello w…");
        let cut = truncate("本番データベースの障害対応", 9);
        assert!(cut.ends_with('…'));
        assert!(width(&cut) <= 9, "{cut} is {} wide", width(&cut));
        assert_eq!(cut, "本番デー…");
    }

    #[test]
    fn padding_counts_columns_not_characters() {
        assert_eq!(pad("障害", 6), "障害  ");
        assert_eq!(pad("db", 6), "db    ");
    }
}
