//! Phone numbers under `[numbers]` rules: parsing never panics and yields E.164 only, parsing
//! is idempotent, a login number is a parsed number of an allowed calling code, display gives
//! the national digits or the E.164 form, and the US defaults keep the original 10-digit rule.
//!
//! Input: one byte choosing the default region, one byte choosing the allowed regions (a bit
//! per region of the first eight; none = the default only), then the number as typed.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use hangin::config::NumbersConfig;
use hangin::people::numbers::Numbers;
use libfuzzer_sys::fuzz_target;

/// Regions with different rules: +1 countries, trunk prefixes, shared calling codes (+7, +44),
/// leading zeros kept (IT), long numbers (DE, CN).
const REGIONS: [&str; 16] = [
    "US", "IL", "GB", "DE", "IN", "BR", "IT", "CA", "RU", "KZ", "CN", "JP", "FR", "AR", "MX", "JE",
];

thread_local! {
    static RULES: RefCell<HashMap<(u8, u8), Numbers>> = RefCell::new(HashMap::new());
}

fn rules(default: u8, allowed: u8) -> Numbers {
    RULES.with(|cache| {
        cache
            .borrow_mut()
            .entry((default, allowed))
            .or_insert_with(|| {
                let config = NumbersConfig {
                    default_region: REGIONS[usize::from(default) % REGIONS.len()].into(),
                    allowed_regions: (0..8)
                        .filter(|bit| allowed & (1 << bit) != 0)
                        .map(|bit| REGIONS[bit].to_string())
                        .collect(),
                };
                Numbers::new(&config.default_region, &config.allowed_regions)
                    .expect("every region of the list is known")
            })
            .clone()
    })
}

/// `+` and digits, no leading zero. Not ITU's 15-digit cap: libphonenumber's metadata holds
/// valid numbers beyond it (a German 14-digit national number is 16 digits with +49, found by
/// this target), and the server stores what libphonenumber calls valid.
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (2..=20).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

fuzz_target!(|data: &[u8]| {
    let [default, allowed, rest @ ..] = data else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let numbers = rules(*default, *allowed);
    assert!(!numbers.login_rule().is_empty());
    let parsed = numbers.parse(raw);
    if let Some(e164) = &parsed {
        assert!(is_e164(e164), "{raw:?} → {e164:?}");
        assert_eq!(numbers.parse(e164).as_ref(), Some(e164), "{raw:?}");
        let shown = numbers.display(e164);
        assert!(
            shown == *e164 || (!shown.is_empty() && shown.bytes().all(|b| b.is_ascii_digit())),
            "{e164:?} shown as {shown:?}"
        );
        if REGIONS[usize::from(*default) % REGIONS.len()] == "US" && e164.starts_with("+1") {
            // The original rule: 10 digits after +1, shown as those 10 digits.
            assert_eq!(shown.len(), 10, "{e164:?}");
            assert_eq!(numbers.parse(&shown).as_ref(), Some(e164));
        }
    }
    if let Some(login) = numbers.login(raw) {
        assert_eq!(Some(&login), parsed.as_ref(), "{raw:?}");
    }
});
