//! The drivers' one retry policy: a few tries with exponential backoff, stopping early on a
//! failure that another try cannot mend.

use std::future::Future;
use std::time::Duration;

/// Pause before the second try; it doubles before each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Call `once(attempt)` (1-based) up to `tries` times until it succeeds. A failure is the
/// reason and whether retrying may help; the last reason is returned when every try failed or
/// one said retrying cannot help.
pub async fn with_backoff<T, F, Fut>(tries: u32, mut once: F) -> Result<T, String>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, (String, bool)>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=tries {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        match once(attempt).await {
            Ok(v) => return Ok(v),
            Err((why, retry)) => {
                last = why;
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_with_doubling_pauses_until_success() {
        let started = tokio::time::Instant::now();
        let got = with_backoff(3, |attempt| async move {
            if attempt < 3 {
                Err(("busy".to_string(), true))
            } else {
                Ok(attempt)
            }
        })
        .await;
        assert_eq!(got, Ok(3));
        // 500 ms before the second try, 1 s before the third.
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hopeless_failure_stops_at_once() {
        let mut calls = 0;
        let got: Result<(), String> = with_backoff(5, |_| {
            calls += 1;
            async { Err(("rejected".to_string(), false)) }
        })
        .await;
        assert_eq!(got, Err("rejected".to_string()));
        assert_eq!(calls, 1);
    }
}
