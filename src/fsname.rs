//! Run and sweep names are labels, not paths: every file name derived from one goes through
//! [`component`], so a name such as `../../x` or `/tmp/x` never writes outside the store's folder.

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

#[cfg(test)]
mod tests {
    use super::component;

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
