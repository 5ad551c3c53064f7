//! Run and sweep names are labels, not paths or terminal commands: every file name derived from
//! one goes through [`component`], so a name such as `../../x` or `/tmp/x` never writes outside
//! the store's folder, and a name from a file name goes through [`shown`] before it is stored,
//! so no control character (an escape sequence, a newline) reaches a terminal.

/// `name` as one safe path component: ASCII letters, digits, `-`, `_`, `.` and `=` kept, every
/// other character `_`; no leading dot (so never `.` or `..`); at most 100 characters; never
/// empty.
pub fn component(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.starts_with('.') {
        safe.insert(0, '_');
    }
    safe
}

/// `name` with every control character escaped (`\n`, `\u{1b}`): a label safe to print.
pub fn shown(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{component, shown};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(shown("lr sweep"), "lr sweep");
        assert_eq!(shown("a\nb\u{1b}[31mred"), "a\\nb\\u{1b}[31mred");
        assert!(!shown("\u{7}\u{9b}x\r").chars().any(char::is_control));
    }

    #[test]
    fn names_become_one_safe_component() {
        assert_eq!(component("lr-sweep_2"), "lr-sweep_2");
        assert_eq!(component("../../../ESCAPED"), "_.._.._.._ESCAPED");
        assert_eq!(component("/tmp/x/ABSOLUTE"), "_tmp_x_ABSOLUTE");
        assert_eq!(component(".."), "_..");
        assert_eq!(component(""), "_");
        assert_eq!(component("a\nb\u{1b}[31m"), "a_b__31m");
        assert_eq!(component(&"x".repeat(500)).len(), 100);
        for bad in ["..", ".", "", "/", "a/b", "..\\x"] {
            let c = component(bad);
            assert!(
                !c.contains('/') && !c.contains('\\') && c != "." && c != "..",
                "{c}"
            );
        }
    }
}
