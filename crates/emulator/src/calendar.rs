//! The emulator's payment calendar, one for every payment platform it plays: what WeChat Pay's
//! and Alipay's payments and refunds are dated by, and what a daily bill's "today" is. A test
//! may move it from the real clock (`/emulator/wechatpay/clock`, `/emulator/alipay/clock`, the
//! same setting) so that a payment made now is in a bill already, or was made yesterday.
//! Signature timestamps and token lifetimes keep the real clock.
//!
//! Also the rules both platforms' bills share: a bill date is `YYYY-MM-DD`, and a bill can be
//! had for the days before today, back to three calendar months.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use time::macros::{format_description, offset};
use time::{Date, Month, OffsetDateTime};

use crate::state::Emulator;

/// How far the calendar may be moved: ten years either way.
const MAX_OFFSET_SECS: i64 = 10 * 366 * 86_400;

/// The calendar: the real clock moved by an offset.
#[derive(Default)]
pub(crate) struct Calendar {
    offset_secs: AtomicI64,
}

impl Calendar {
    /// Now on the calendar, in China time, to the second.
    pub(crate) fn now(&self) -> OffsetDateTime {
        let now = real_now() + time::Duration::seconds(self.offset_secs.load(Ordering::Relaxed));
        let now = now.to_offset(offset!(+8));
        now.replace_nanosecond(0).unwrap_or(now)
    }

    /// Moves the calendar `offset_secs` from the real clock (`0` puts it back) and answers its
    /// new now; `None`, and no move, past ten years either way.
    pub(crate) fn set_offset(&self, offset_secs: i64) -> Option<OffsetDateTime> {
        if offset_secs.checked_abs()? > MAX_OFFSET_SECS {
            return None;
        }
        self.offset_secs.store(offset_secs, Ordering::Relaxed);
        Some(self.now())
    }
}

#[derive(Deserialize)]
pub(crate) struct ClockBody {
    /// Seconds from the real clock; `0` puts the calendar back.
    offset_secs: i64,
}

/// `POST /emulator/wechatpay/clock`, `POST /emulator/alipay/clock` (the same calendar): moves
/// it `offset_secs` from the real clock; answers `{"now"}` on it, in China time. Past ten years
/// either way, 400 `{"error"}` and no move.
pub(crate) async fn clock(
    State(emulator): State<Arc<Emulator>>,
    axum::Json(body): axum::Json<ClockBody>,
) -> Response {
    let now = emulator
        .calendar
        .set_offset(body.offset_secs)
        .and_then(|now| {
            now.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    match now {
        Some(now) => axum::Json(json!({ "now": now })).into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "offset_secs is more than ten years" })),
        )
            .into_response(),
    }
}

#[allow(clippy::disallowed_methods)] // The emulator has no domain code to steer from tests.
fn real_now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `YYYY-MM-DD`, and nothing else.
pub(crate) fn bill_date(text: &str) -> Option<Date> {
    if text.len() != 10 {
        return None;
    }
    Date::parse(text, format_description!("[year]-[month]-[day]")).ok()
}

/// The same day three calendar months before `today` (the last day of that month if it is
/// shorter): the oldest bill the platforms still serve.
pub(crate) fn three_months_before(today: Date) -> Date {
    let (mut year, mut month) = (today.year(), today.month() as u8);
    if month <= 3 {
        year -= 1;
        month += 9;
    } else {
        month -= 3;
    }
    let month = Month::try_from(month).unwrap_or(Month::January);
    let day = today.day().min(month.length(year));
    Date::from_calendar_date(year, month, day).unwrap_or(today)
}

/// Whether a bill of `date` can be had `today`: a day before today, at most three calendar
/// months back.
pub(crate) fn bill_ready(date: Date, today: Date) -> bool {
    date < today && date >= three_months_before(today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn three_months_back_stays_in_the_month() {
        assert_eq!(
            three_months_before(date!(2026 - 05 - 31)),
            date!(2026 - 02 - 28)
        );
        assert_eq!(
            three_months_before(date!(2026 - 02 - 10)),
            date!(2025 - 11 - 10)
        );
        assert_eq!(
            three_months_before(date!(2026 - 12 - 31)),
            date!(2026 - 09 - 30)
        );
    }

    #[test]
    fn bill_dates_are_strict() {
        assert_eq!(bill_date("2026-12-02"), Some(date!(2026 - 12 - 02)));
        for bad in [
            "20261202",
            "2026-12-2",
            "2026-13-01",
            "2026-02-30",
            "+2026-12-0",
        ] {
            assert_eq!(bill_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn bills_are_ready_for_the_last_three_months_before_today() {
        let today = date!(2026 - 05 - 31);
        assert!(bill_ready(date!(2026 - 05 - 30), today));
        assert!(bill_ready(date!(2026 - 02 - 28), today));
        assert!(!bill_ready(date!(2026 - 02 - 27), today));
        assert!(!bill_ready(today, today));
        assert!(!bill_ready(date!(2026 - 06 - 01), today));
    }

    #[test]
    fn the_calendar_moves_within_ten_years() {
        let calendar = Calendar::default();
        let now = calendar.now();
        assert_eq!(now.offset(), offset!(+8));
        let moved = calendar.set_offset(-86_400);
        assert!(
            moved.is_some_and(|m| (now - m - time::Duration::days(1)).abs().whole_seconds() < 5)
        );
        assert!(calendar.set_offset(MAX_OFFSET_SECS + 1).is_none());
        assert!(calendar.set_offset(i64::MIN).is_none());
        // The refused move left the calendar where it was.
        assert!(
            (now - calendar.now() - time::Duration::days(1))
                .abs()
                .whole_seconds()
                < 5
        );
        assert!(calendar.set_offset(0).is_some());
    }
}
