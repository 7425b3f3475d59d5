//! Phone numbers (behaviour.md "People and numbers", docs/behaviour.md "Numbers"): parsed by
//! libphonenumber's rules (the `phonenumber` crate) under `[numbers] default_region`, stored in
//! E.164, shown in the default region's national form (digits only) and in E.164 otherwise.
//!
//! Numbers with calling code +1 keep the original server's rule — any 10 digits after dropping
//! separators and a leading `+1`/`1` — so every existing US user and client (and the 555 test
//! numbers libphonenumber calls invalid) behaves exactly as before.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use phonenumber::country;
use phonenumber::metadata::DATABASE;
use phonenumber::Mode;

/// The North American Numbering Plan's calling code.
const NANP: u16 = 1;

/// The parsing rules of one server.
#[derive(Debug, Clone)]
pub struct Numbers {
    default_region: country::Id,
    default_code: u16,
    /// Calling codes whose numbers may log in.
    allowed_codes: Vec<u16>,
    /// The region names as configured (upper case), for the `invalid_number` error.
    default_name: String,
    allowed_names: Vec<String>,
    /// That error's sentence, made on first use: it may read libphonenumber's metadata, which
    /// the US defaults never load at start.
    login_rule: Arc<OnceLock<String>>,
}

/// Calling code of a region name such as "US" or "il", or `None` when libphonenumber does not
/// know it.
fn region(name: &str) -> Option<(country::Id, u16)> {
    let name = name.trim().to_ascii_uppercase();
    let id: country::Id = name.parse().ok()?;
    if id == country::Id::US {
        // The default needs no metadata: loading libphonenumber's database costs ~0.3 s of
        // CPU and ~5 MB at start on a Pi; it loads on the first non-+1 number instead.
        return Some((id, NANP));
    }
    let code = DATABASE.by_id(name.as_str())?.country_code();
    Some((id, code))
}

impl Numbers {
    /// The rules of `[numbers] default_region` and `allowed_regions`; the error names the bad
    /// key. Takes the two values rather than the config section, so that config (which checks
    /// them at load) sits above this module.
    pub fn new(default_region: &str, allowed_regions: &[String]) -> Result<Numbers, String> {
        let name = default_region;
        let (default_region, default_code) = region(name).ok_or_else(|| {
            format!(
                "key `numbers.default_region`: `{name}` is not a region code like \"US\" or \"IL\""
            )
        })?;
        let mut allowed_codes = Vec::new();
        let mut allowed_names = Vec::new();
        for name in allowed_regions {
            let (_, code) = region(name).ok_or_else(|| {
                format!("key `numbers.allowed_regions`: `{name}` is not a region code like \"US\"")
            })?;
            allowed_codes.push(code);
            allowed_names.push(name.trim().to_ascii_uppercase());
        }
        let default_name = name.trim().to_ascii_uppercase();
        if allowed_codes.is_empty() {
            allowed_codes.push(default_code);
            allowed_names.push(default_name.clone());
        }
        Ok(Numbers {
            default_region,
            default_code,
            allowed_codes,
            default_name,
            allowed_names,
            login_rule: Arc::default(),
        })
    }

    /// The `error_description` of `invalid_number`: which numbers may log in here.
    pub fn login_rule(&self) -> &str {
        self.login_rule
            .get_or_init(|| login_rule(&self.default_name, &self.allowed_names))
    }

    /// The US rules (the defaults).
    pub fn us() -> Numbers {
        Numbers::new("US", &[]).expect("US is a region")
    }

    /// Any number as written in an address book or typed at login → E.164 (`+15551234567`), or
    /// `None` when it cannot be parsed: letters, an extension, a wrong length, or (outside +1) a
    /// number libphonenumber's metadata does not hold valid.
    pub fn parse(&self, raw: &str) -> Option<String> {
        let cleaned = clean(raw)?;
        let international = cleaned.starts_with('+');
        if self.default_code == NANP || cleaned.starts_with("+1") {
            // The original rule, for every number that can be +1 under these settings.
            if let Some(ten) = nanp_ten_digits(&cleaned) {
                return Some(format!("+1{ten}"));
            }
            if !international && self.default_code == NANP {
                // No `+` under a +1 default: only the 10-digit rule applies (and an 011 prefix).
                return cleaned
                    .strip_prefix("011")
                    .and_then(|rest| self.parse(&format!("+{rest}")));
            }
        }
        let parsed = phonenumber::parse(Some(self.default_region), &cleaned).ok()?;
        let code = parsed.country().code();
        if parsed.extension().is_some() || code == NANP || !parsed.is_valid() {
            return None;
        }
        Some(parsed.format().mode(Mode::E164).to_string())
    }

    /// A number that may log in (`POST /create`, the password grant) → E.164: parseable and of
    /// a calling code in `allowed_regions`.
    pub fn login(&self, raw: &str) -> Option<String> {
        let e164 = self.parse(raw)?;
        self.allowed_codes
            .iter()
            .any(|code| has_code(&e164, *code))
            .then_some(e164)
    }

    /// How a stored (E.164) number is shown on the wire.
    pub fn display(&self, stored: &str) -> String {
        display_with(self.default_code, stored)
    }
}

/// The original server's words under the default settings; otherwise the allowed regions and
/// an example in the default region's own form and in E.164 (libphonenumber's mobile example).
fn login_rule(default: &str, allowed: &[String]) -> String {
    if default == "US" && allowed.iter().all(|name| name == "US") {
        return "Number must be a 10 digit US number.".into();
    }
    let example = |name: &str, mode: Mode| -> Option<String> {
        let id: country::Id = name.parse().ok()?;
        let digits = DATABASE.by_id(name)?.descriptors().mobile()?.example()?;
        let parsed = phonenumber::parse(Some(id), digits).ok()?;
        Some(parsed.format().mode(mode).to_string())
    };
    let mut names: Vec<&str> = Vec::new();
    for name in allowed {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let list = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => default.to_string(),
    };
    let local = names
        .contains(&default)
        .then(|| example(default, Mode::National))
        .flatten();
    let international = example(
        if names.contains(&default) {
            default
        } else {
            names.first().copied().unwrap_or(default)
        },
        Mode::E164,
    );
    match (local, international) {
        (Some(local), Some(international)) => format!(
            "Number must be a phone number of {list}: as dialled in {default} (e.g. {local}) or with its country code (e.g. {international})."
        ),
        (None, Some(international)) => format!(
            "Number must be a phone number of {list}, with its country code (e.g. {international})."
        ),
        _ => format!("Number must be a phone number of {list}."),
    }
}

/// Calling codes are prefix-free, so the string prefix decides.
fn has_code(e164: &str, code: u16) -> bool {
    e164.strip_prefix('+')
        .and_then(|rest| rest.strip_prefix(code.to_string().as_str()))
        .is_some()
}

fn display_with(code: u16, stored: &str) -> String {
    match stored
        .strip_prefix('+')
        .and_then(|rest| rest.strip_prefix(code.to_string().as_str()))
    {
        Some(national) => national.to_string(),
        None => stored.to_string(),
    }
}

/// Drop what address books put around digits (spaces, `()-./`, Unicode dashes, no-break spaces
/// and the direction marks iOS wraps numbers in); `None` for anything else, or a `+` that does
/// not lead.
fn clean(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        match c {
            '0'..='9' => out.push(c),
            '+' if out.is_empty() => out.push('+'),
            '(' | ')' | '-' | '.' | '/' => {}
            '\u{2010}'..='\u{2015}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' => {}
            c if c.is_whitespace() => {}
            _ => return None,
        }
    }
    (out.len() > 1).then_some(out)
}

/// The original rule: drop a leading `+1`, or a leading `1` when 11 digits remain; the rest must
/// be exactly 10 digits.
fn nanp_ten_digits(cleaned: &str) -> Option<&str> {
    let rest = if let Some(rest) = cleaned.strip_prefix("+1") {
        rest
    } else if cleaned.len() == 11 && cleaned.starts_with('1') {
        &cleaned[1..]
    } else {
        cleaned
    };
    (rest.len() == 10 && rest.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// The default region's calling code for [`display`]; set once at start from the configuration
/// (a process serves one configuration; the wire mapping in `wire.rs` has no state to carry it).
static DISPLAY_CODE: AtomicU16 = AtomicU16::new(NANP);

/// Make [`display`] follow these rules (the server calls this at start).
pub fn set_display(numbers: &Numbers) {
    DISPLAY_CODE.store(numbers.default_code, Ordering::Relaxed);
}

/// A stored number as the wire shows it: the default region's numbers as their national
/// significant number (10 digits in the US), others in E.164.
pub fn display(stored: &str) -> String {
    display_with(DISPLAY_CODE.load(Ordering::Relaxed), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(default: &str, allowed: &[&str]) -> Numbers {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Numbers::new(default, &allowed).unwrap()
    }

    #[test]
    fn us_forms_are_the_original_ten_digit_rule() {
        let us = Numbers::us();
        for raw in [
            "5551234567",
            "(555) 123-4567",
            "+1 555 123 4567",
            "1-555-123-4567",
            "555.123.4567",
            "+15551234567",
            "\u{202a}+1 (555) 123\u{2011}4567\u{202c}"
                .replace('\u{2011}', "-")
                .as_str(),
            "555\u{a0}123\u{a0}4567",
        ] {
            assert_eq!(us.parse(raw).as_deref(), Some("+15551234567"), "{raw}");
            assert_eq!(us.login(raw).as_deref(), Some("+15551234567"), "{raw}");
        }
        assert_eq!(us.display("+15551234567"), "5551234567");
    }

    #[test]
    fn malformed_numbers_are_refused() {
        let us = Numbers::us();
        for raw in [
            "",
            "+",
            "123",
            "12345",
            "abcdefghij",
            "55512345678901",
            "555123456x",
            "25551234567",
            "1-800-FLOWERS",
            "555 123 4567 ext 12",
            "5551+234567",
            "+44 20 7946 095",
        ] {
            assert_eq!(us.parse(raw), None, "{raw}");
        }
    }

    #[test]
    fn foreign_numbers_parse_but_log_in_only_where_allowed() {
        let us = Numbers::us();
        for (raw, e164) in [
            ("+44 20 7946 0958", "+442079460958"),
            ("+972 50-234-5678", "+972502345678"),
            ("011 972 50 234 5678", "+972502345678"),
        ] {
            assert_eq!(us.parse(raw).as_deref(), Some(e164), "{raw}");
            assert_eq!(us.login(raw), None, "{raw}");
            assert_eq!(us.display(e164), e164);
        }
        let both = rules("US", &["US", "IL"]);
        assert_eq!(
            both.login("+972502345678").as_deref(),
            Some("+972502345678")
        );
    }

    #[test]
    fn another_default_region_reads_its_national_forms() {
        let il = rules("IL", &[]);
        for raw in ["050-234-5678", "0502345678", "+972 50 234 5678"] {
            assert_eq!(il.login(raw).as_deref(), Some("+972502345678"), "{raw}");
        }
        assert_eq!(il.display("+972502345678"), "502345678");
        assert_eq!(il.display("+15551234567"), "+15551234567");
        // +1 keeps its own rule whatever the default region; it may not log in here.
        assert_eq!(il.parse("+1 555 123 4567").as_deref(), Some("+15551234567"));
        assert_eq!(il.login("+1 555 123 4567"), None);
        assert_eq!(il.parse("12345"), None);
    }

    #[test]
    fn the_login_rule_names_the_configured_regions() {
        assert_eq!(
            Numbers::us().login_rule(),
            "Number must be a 10 digit US number."
        );
        assert_eq!(
            rules("il", &[]).login_rule(),
            "Number must be a phone number of IL: as dialled in IL (e.g. 050-234-5678) or with \
             its country code (e.g. +972502345678)."
        );
        assert_eq!(
            rules("IL", &["IL", "US"]).login_rule(),
            "Number must be a phone number of IL or US: as dialled in IL (e.g. 050-234-5678) or \
             with its country code (e.g. +972502345678)."
        );
        assert_eq!(
            rules("US", &["US", "GB", "IL"]).login_rule(),
            "Number must be a phone number of US, GB or IL: as dialled in US (e.g. (201) 555-0123) \
             or with its country code (e.g. +12015550123)."
        );
        assert_eq!(
            rules("US", &["IL"]).login_rule(),
            "Number must be a phone number of IL, with its country code (e.g. +972502345678)."
        );
    }

    #[test]
    fn unknown_regions_are_config_errors() {
        let e = Numbers::new("XX", &[]).unwrap_err();
        assert!(e.contains("numbers.default_region"), "{e}");
        let e = Numbers::new("us", &["Narnia".into()]).unwrap_err();
        assert!(e.contains("numbers.allowed_regions"), "{e}");
    }
}
