//! Phone number normalisation: never panics, yields only the normal form, and is idempotent.
#![no_main]

use hangin::people::numbers::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(n) = normalize(raw) {
        assert!(
            n.len() == 10 && n.bytes().all(|b| b.is_ascii_digit()),
            "{n:?}"
        );
        assert_eq!(normalize(&n).as_deref(), Some(n.as_str()));
    }
});
