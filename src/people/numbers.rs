//! US phone numbers (behaviour.md "People and numbers"): one normal form, 10 digits.

/// Drop spaces, `(`, `)`, `-`, `.`; drop a leading `+1`, or a leading `1` when 11 digits remain;
/// the rest must be exactly 10 digits.
pub fn normalize(raw: &str) -> Option<String> {
    let mut s: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '(' | ')' | '-' | '.' | '\t'))
        .collect();
    if let Some(rest) = s.strip_prefix("+1") {
        s = rest.to_string();
    } else if s.len() == 11 && s.starts_with('1') {
        s.remove(0);
    }
    (s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn accepts_the_usual_forms() {
        for raw in [
            "5551234567",
            "(555) 123-4567",
            "+1 555 123 4567",
            "1-555-123-4567",
            "555.123.4567",
            "+15551234567",
        ] {
            assert_eq!(normalize(raw).as_deref(), Some("5551234567"), "{raw}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for raw in [
            "",
            "123",
            "abcdefghij",
            "55512345678901",
            "+44 20 7946 0958",
            "555123456x",
            "25551234567",
        ] {
            assert_eq!(normalize(raw), None, "{raw}");
        }
    }
}
