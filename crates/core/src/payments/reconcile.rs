//! Reconciliation: a day's trade bill, as the platform keeps it, compared with the orders and
//! refunds kept here, and every difference reported (a payment the platform took that is not
//! paid here, one paid here that the platform does not list, amounts and refunds that differ).
//!
//! A bill covers one China-time calendar day and is made after 10:00 the next day. Each
//! merchant's bill is compared once a day by a check on the payments queue (a chain: each day's
//! check queues the next day's, and a chain that finds the day's report already made by
//! another stops, so configuring a merchant twice does not compare twice); an admin can compare
//! any day of the last three months at once. Reports are kept, one per provider and day.
//!
//! Both platforms' bills are read (WeChat Pay's gzipped CSV, checked by the SHA-1 of its signed
//! reply; Alipay's zip of GBK CSV files behind an unsigned link to its own hosts) into the same
//! rows. Reading and comparing run on blocking threads, one day at a time on the whole server:
//! a merchant's `base_url` is an app admin's to set, so a bill is as hostile as any input.

use std::collections::{HashMap, HashSet};

use cloudlet_platforms::bill::{BillKind, BillRow};
use cloudlet_store::{
    ORDER_PAID, ORDER_PARTLY_REFUNDED, ORDER_REFUNDED, OrderRow, REFUND_SUCCEEDED, RefundRow,
    ReportRow,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

use super::{Check, PayError, Payments, Provider};
use crate::apps::AppName;
use crate::clock::Timestamp;

/// Differences listed in a report, at most (all are counted).
pub const MAX_LISTED_DIFFERENCES: usize = 1000;
/// How far back a bill can be asked for (both platforms keep three months; the shortest three
/// months are 89 days).
const MAX_AGE_DAYS: i64 = 89;
/// A day without a bill this long after it started had no trades there; before, the bill is
/// late, not empty.
const NO_BILL_AFTER_MS: i64 = 3 * 24 * 3600 * 1000;
/// How long the daily comparison waits for a late bill before asking again.
const LATE_BILL_RETRY_SECS: f64 = 3600.0;
/// A refund that succeeded here in the first minutes of a day may be in the previous day's
/// bill (it was done there before midnight and confirmed here after): not reported missing.
const REFUND_GRACE_MS: i64 = 30 * 60 * 1000;
/// Numbers looked up per store call.
const LOOKUP_CHUNK: usize = 1000;

/// A bill's day, `YYYY-MM-DD` in China time, parsed at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillDate(Date);

const CHINA: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

impl BillDate {
    pub fn parse(text: &str) -> Result<Self, PayError> {
        let bad = || PayError::InvalidBillDate(text.chars().take(20).collect());
        let shaped = text.len() == 10
            && text.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shaped {
            return Err(bad());
        }
        let number = |range: std::ops::Range<usize>| text[range].parse::<u16>().map_err(|_| bad());
        let month =
            Month::try_from(u8::try_from(number(5..7)?).map_err(|_| bad())?).map_err(|_| bad())?;
        let day = u8::try_from(number(8..10)?).map_err(|_| bad())?;
        Date::from_calendar_date(i32::from(number(0..4)?), month, day)
            .map(BillDate)
            .map_err(|_| bad())
    }

    /// The China-time day `ms` falls in.
    pub fn of_ms(ms: i64) -> Self {
        let date = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .map(|t| t.to_offset(CHINA).date())
            .unwrap_or(Date::MIN);
        BillDate(date)
    }

    /// Where the day starts, in Unix milliseconds.
    fn start_ms(self) -> i64 {
        PrimitiveDateTime::new(self.0, Time::MIDNIGHT)
            .assume_offset(CHINA)
            .unix_timestamp()
            * 1000
    }

    fn next(self) -> Self {
        BillDate(self.0.next_day().unwrap_or(self.0))
    }

    /// When the platform has made the day's bill for sure: noon of the next day (it says
    /// "after 10:00").
    fn ready_ms(self) -> i64 {
        self.start_ms() + 36 * 3600 * 1000
    }
}

impl std::fmt::Display for BillDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = (self.0.year(), u8::from(self.0.month()), self.0.day());
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// What a day adds up to, on one side.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Totals {
    pub payments: u64,
    pub paid_fen: i64,
    pub refunds: u64,
    pub refunded_fen: i64,
}

/// One difference between the bill and the books.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Difference {
    /// `missing_here` (the platform took a payment of an order not here), `state` (paid there,
    /// not paid here), `amount`, `transaction_id`, `duplicate` (a payment listed twice),
    /// `missing_there` (paid here that day, not in the bill), `refund_missing_here`,
    /// `refund_order` (a refund the bill puts on another order), `refund_state`,
    /// `refund_amount`, `refund_missing_there`, `unknown_row` (a line the bill names
    /// otherwise).
    pub kind: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_refund_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// What the books say (`null` when they have nothing).
    pub here: Json,
    /// What the bill says (`null` when it has nothing).
    pub there: Json,
}

/// A day's comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    pub provider: String,
    pub bill_date: String,
    /// `daily` (the day's check) or `admin`.
    pub source: String,
    /// False when the platform had no bill for the day (no trades there).
    pub bill_found: bool,
    pub bill: Totals,
    pub here: Totals,
    /// How many differences; the first [`MAX_LISTED_DIFFERENCES`] are listed.
    pub differences: u64,
    pub items: Vec<Difference>,
    /// RFC 3339.
    pub checked_at: String,
}

/// A kept report, as listed.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportSummary {
    pub provider: String,
    pub bill_date: String,
    pub differences: i64,
    pub checked_at: Timestamp,
}

/// Compares a day's bill rows with the books; `lookup` finds the orders and refunds the bill
/// names that were not settled that day here.
struct Comparison {
    /// Up to [`MAX_LISTED_DIFFERENCES`] of each kind, so that a flood of one kind can not
    /// push the others out of the list.
    items: Vec<Difference>,
    listed: HashMap<&'static str, usize>,
    count: u64,
}

/// Kinds in the order a report lists them: money taken there that the books miss first, a
/// flood of payments the books never heard of last.
const KIND_ORDER: [&str; 12] = [
    "state",
    "amount",
    "missing_there",
    "refund_missing_there",
    "refund_amount",
    "refund_state",
    "refund_order",
    "transaction_id",
    "duplicate",
    "refund_missing_here",
    "unknown_row",
    "missing_here",
];

impl Comparison {
    fn add(&mut self, kind: &'static str, difference: impl FnOnce() -> Difference) {
        self.count += 1;
        let listed = self.listed.entry(kind).or_default();
        if *listed < MAX_LISTED_DIFFERENCES {
            *listed += 1;
            self.items.push(difference());
        }
    }

    /// The list, most pressing first, cut to [`MAX_LISTED_DIFFERENCES`].
    fn finish(mut self) -> Self {
        let rank = |kind: &str| KIND_ORDER.iter().position(|k| *k == kind).unwrap_or(0);
        self.items.sort_by_key(|d| rank(&d.kind));
        self.items.truncate(MAX_LISTED_DIFFERENCES);
        self
    }
}

fn order_facts(order: &OrderRow) -> Json {
    json!({
        "state": order.state,
        "amount_fen": order.amount_fen,
        "transaction_id": order.transaction_id,
        "paid_at": order.paid_at_ms.map(Timestamp::from_unix_ms),
    })
}

fn refund_facts(refund: &RefundRow) -> Json {
    json!({ "state": refund.state, "amount_fen": refund.amount_fen, "order_id": refund.order_id })
}

fn row_facts(row: &BillRow) -> Json {
    match row.kind {
        BillKind::Refund => json!({
            "time": row.time, "refund_fen": row.refund_fen, "refund_id": row.refund_id,
            "transaction_id": row.transaction_id,
        }),
        _ => json!({
            "time": row.time, "amount_fen": row.amount_fen, "transaction_id": row.transaction_id,
            "state": match &row.kind { BillKind::Other(state) => state.as_str(), _ => "SUCCESS" },
        }),
    }
}

fn paid(order: &OrderRow) -> bool {
    [ORDER_PAID, ORDER_PARTLY_REFUNDED, ORDER_REFUNDED].contains(&order.state.as_str())
}

/// The differences between a day's bill and the books: `day_orders` and `day_refunds` were
/// settled here that day, `orders` and `refunds` are every one the bill names (by number).
fn compare(
    rows: &[BillRow],
    day_orders: &[OrderRow],
    day_refunds: &[RefundRow],
    orders: &HashMap<String, OrderRow>,
    refunds: &HashMap<String, RefundRow>,
    refund_grace_until_ms: i64,
) -> Comparison {
    let mut found = Comparison {
        items: Vec::new(),
        listed: HashMap::new(),
        count: 0,
    };
    // A trade listed more than once: the line that matches the books (by the platform's
    // number) is the payment, the others duplicates, in whatever order the bill has them.
    let mut primary: HashMap<&str, usize> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        if row.kind != BillKind::Payment {
            continue;
        }
        let matches = |i: usize| {
            orders.get(&rows[i].out_trade_no).is_some_and(|o| {
                o.transaction_id.as_deref() == Some(rows[i].transaction_id.as_str())
            })
        };
        primary
            .entry(row.out_trade_no.as_str())
            .and_modify(|first| {
                if !matches(*first) && matches(index) {
                    *first = index;
                }
            })
            .or_insert(index);
    }
    let mut billed_refunds = HashSet::new();
    for (index, row) in rows.iter().enumerate() {
        let difference = |kind: &str, order_id: Option<&str>, here: Json| Difference {
            kind: kind.to_owned(),
            out_trade_no: row.out_trade_no.clone(),
            out_refund_no: row.out_refund_no.clone(),
            order_id: order_id.map(str::to_owned),
            here,
            there: row_facts(row),
        };
        match &row.kind {
            BillKind::Payment => {
                if primary.get(row.out_trade_no.as_str()) != Some(&index) {
                    found.add("duplicate", || difference("duplicate", None, Json::Null));
                    continue;
                }
                let Some(order) = orders.get(&row.out_trade_no) else {
                    found.add("missing_here", || {
                        difference("missing_here", None, Json::Null)
                    });
                    continue;
                };
                let kind = if order.amount_fen != row.amount_fen {
                    Some("amount")
                } else if !paid(order) {
                    Some("state")
                } else if order.transaction_id.as_deref() != Some(row.transaction_id.as_str()) {
                    Some("transaction_id")
                } else {
                    None
                };
                if let Some(kind) = kind {
                    found.add(kind, || {
                        difference(kind, Some(&order.id), order_facts(order))
                    });
                }
            }
            BillKind::Refund => {
                let no = row.out_refund_no.as_deref().unwrap_or_default();
                billed_refunds.insert(no);
                let Some(refund) = refunds.get(no) else {
                    found.add("refund_missing_here", || {
                        difference("refund_missing_here", None, Json::Null)
                    });
                    continue;
                };
                let of_order = orders
                    .get(&row.out_trade_no)
                    .is_some_and(|o| o.id == refund.order_id);
                let kind = if !of_order {
                    Some("refund_order")
                } else if refund.amount_fen != row.refund_fen {
                    Some("refund_amount")
                } else if refund.state != REFUND_SUCCEEDED {
                    Some("refund_state")
                } else {
                    None
                };
                if let Some(kind) = kind {
                    found.add(kind, || {
                        difference(kind, Some(&refund.order_id), refund_facts(refund))
                    });
                }
            }
            BillKind::Other(_) => {
                found.add("unknown_row", || {
                    difference("unknown_row", None, Json::Null)
                });
            }
        }
    }
    for order in day_orders {
        if !primary.contains_key(order.out_trade_no.as_str()) {
            found.add("missing_there", || Difference {
                kind: "missing_there".to_owned(),
                out_trade_no: order.out_trade_no.clone(),
                out_refund_no: None,
                order_id: Some(order.id.clone()),
                here: order_facts(order),
                there: Json::Null,
            });
        }
    }
    for refund in day_refunds {
        if !billed_refunds.contains(refund.out_refund_no.as_str())
            && refund.updated_at_ms >= refund_grace_until_ms
        {
            let out_trade_no = day_orders
                .iter()
                .chain(orders.values())
                .find(|o| o.id == refund.order_id)
                .map(|o| o.out_trade_no.clone())
                .unwrap_or_default();
            found.add("refund_missing_there", || Difference {
                kind: "refund_missing_there".to_owned(),
                out_trade_no,
                out_refund_no: Some(refund.out_refund_no.clone()),
                order_id: Some(refund.order_id.clone()),
                here: refund_facts(refund),
                there: Json::Null,
            });
        }
    }
    found.finish()
}

fn totals_of_rows(rows: &[BillRow]) -> Totals {
    let mut totals = Totals::default();
    for row in rows {
        match row.kind {
            BillKind::Payment => {
                totals.payments += 1;
                totals.paid_fen = totals.paid_fen.saturating_add(row.amount_fen);
            }
            BillKind::Refund => {
                totals.refunds += 1;
                totals.refunded_fen = totals.refunded_fen.saturating_add(row.refund_fen);
            }
            BillKind::Other(_) => {}
        }
    }
    totals
}

impl Payments {
    /// Compares the day's bill of `provider` with the books and keeps the report (replacing
    /// the day's earlier one).
    pub async fn reconcile(
        &self,
        app: &AppName,
        provider: Provider,
        date: BillDate,
        source: &str,
    ) -> Result<Report, PayError> {
        let loaded = self.merchant(app, provider).await?;
        let now = self.now_ms();
        let today = BillDate::of_ms(now);
        if date.0 >= today.0 {
            return Err(PayError::BillNotReady(date.to_string()));
        }
        if (today.0 - date.0).whole_days() > MAX_AGE_DAYS {
            return Err(PayError::InvalidBillDate(format!(
                "{date}: bills are kept for three months"
            )));
        }
        // One comparison at a time on the server: a bill is tens of megabytes of work.
        let _turn = self
            .0
            .reconciling
            .acquire()
            .await
            .map_err(|_| PayError::BillNotReady(date.to_string()))?;
        let bill = loaded.merchant.bill(&date.to_string(), now / 1000).await?;
        let bill_found = bill.is_some();
        let rows = match bill {
            Some(rows) => rows,
            // No bill: late, or (days after) none because there were no trades that day.
            None if now < date.start_ms() + NO_BILL_AFTER_MS => {
                return Err(PayError::BillNotReady(date.to_string()));
            }
            None => Vec::new(),
        };
        let (from, to) = (date.start_ms(), date.next().start_ms());
        let store = &self.0.store;
        let (day_orders, day_refunds) = store
            .settled_between(app, provider.name(), from, to)
            .await?;
        let mut orders: HashMap<String, OrderRow> = day_orders
            .iter()
            .map(|o| (o.out_trade_no.clone(), o.clone()))
            .collect();
        let mut refunds: HashMap<String, RefundRow> = day_refunds
            .iter()
            .map(|r| (r.out_refund_no.clone(), r.clone()))
            .collect();
        let unknown_orders: Vec<String> = rows
            .iter()
            .map(|r| &r.out_trade_no)
            .filter(|no| !orders.contains_key(*no))
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        for chunk in unknown_orders.chunks(LOOKUP_CHUNK) {
            for order in store.orders_by_trade_nos(app, chunk.to_vec()).await? {
                orders.insert(order.out_trade_no.clone(), order);
            }
        }
        let unknown_refunds: Vec<String> = rows
            .iter()
            .filter_map(|r| r.out_refund_no.as_ref())
            .filter(|no| !refunds.contains_key(*no))
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        for chunk in unknown_refunds.chunks(LOOKUP_CHUNK) {
            for refund in store.refunds_by_numbers(app, chunk.to_vec()).await? {
                refunds.insert(refund.out_refund_no.clone(), refund);
            }
        }
        // The orders of the day's refunds, so a refund missing there names its order.
        let known: HashSet<&str> = orders.values().map(|o| o.id.as_str()).collect();
        let missing: Vec<String> = day_refunds
            .iter()
            .map(|r| r.order_id.clone())
            .filter(|id| !known.contains(id.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for id in missing {
            if let Some(order) = store.order(app, &id).await? {
                orders.insert(order.out_trade_no.clone(), order);
            }
        }
        let here = Totals {
            payments: day_orders.len() as u64,
            paid_fen: day_orders
                .iter()
                .fold(0, |sum, o| sum.saturating_add(o.amount_fen)),
            refunds: day_refunds.len() as u64,
            refunded_fen: day_refunds
                .iter()
                .fold(0, |sum, r| sum.saturating_add(r.amount_fen)),
        };
        let bill_totals = totals_of_rows(&rows);
        let grace_until = from + REFUND_GRACE_MS;
        let compared = tokio::task::spawn_blocking(move || {
            compare(
                &rows,
                &day_orders,
                &day_refunds,
                &orders,
                &refunds,
                grace_until,
            )
        })
        .await
        .map_err(|e| PayError::Invalid(format!("the comparison stopped: {e}")))?;
        let report = Report {
            provider: provider.name().to_owned(),
            bill_date: date.to_string(),
            source: source.to_owned(),
            bill_found,
            bill: bill_totals,
            here,
            differences: compared.count,
            items: compared.items,
            checked_at: Timestamp::from_unix_ms(now).to_rfc3339(),
        };
        if report.differences > 0 {
            tracing::warn!(app = %app, provider = provider.name(), date = %date, differences = report.differences, "the trade bill and the orders differ");
        }
        let text = serde_json::to_string(&report)
            .map_err(|e| PayError::Invalid(format!("a report that does not serialize: {e}")))?;
        store
            .put_report(
                app,
                ReportRow {
                    provider: report.provider.clone(),
                    bill_date: report.bill_date.clone(),
                    report: text,
                    differences: i64::try_from(report.differences).unwrap_or(i64::MAX),
                    created_at_ms: now,
                },
            )
            .await?;
        Ok(report)
    }

    /// A kept report.
    pub async fn report(
        &self,
        app: &AppName,
        provider: Provider,
        date: BillDate,
    ) -> Result<Report, PayError> {
        let row = self
            .0
            .store
            .report(app, provider.name(), &date.to_string())
            .await?
            .ok_or(PayError::ReportNotFound)?;
        serde_json::from_str(&row.report)
            .map_err(|e| PayError::Invalid(format!("a kept report that does not parse: {e}")))
    }

    /// Kept reports, newest day first.
    pub async fn reports(
        &self,
        app: &AppName,
        limit: usize,
    ) -> Result<Vec<ReportSummary>, PayError> {
        Ok(self
            .0
            .store
            .reports(app, limit.clamp(1, 400))
            .await?
            .into_iter()
            .map(|r| ReportSummary {
                provider: r.provider,
                bill_date: r.bill_date,
                differences: r.differences,
                checked_at: Timestamp::from_unix_ms(r.created_at_ms),
            })
            .collect())
    }

    /// Queues the daily comparison of `date`'s bill, due when the bill is ready
    /// (`generation` numbers the tries of one day).
    pub(super) async fn reconcile_later(
        &self,
        app: &AppName,
        provider: Provider,
        date: BillDate,
        generation: u32,
    ) -> Result<(), PayError> {
        let now = self.now_ms();
        let due_in_secs = ((date.ready_ms() - now) / 1000).max(1);
        let check = Check::Bill {
            provider: provider.name().to_owned(),
            date: date.to_string(),
        };
        self.queue_check(check, app, due_in_secs as f64, generation)
            .await
    }

    /// Runs the daily comparison of `date`. The next day's is queued first (under a key, so
    /// a retry does not queue it twice), so the chain goes on whatever becomes of this day; a
    /// chain that finds the day compared by another stops there (configuring a merchant twice
    /// starts two chains; they meet). A late bill is asked for again an hour later, for three
    /// days; other failures are retried by the queue, then left in its dead letters.
    pub(super) async fn reconcile_daily(
        &self,
        app: &AppName,
        provider: &str,
        date: &str,
        generation: u32,
    ) -> Result<bool, PayError> {
        let provider = Provider::parse(provider)?;
        let date = BillDate::parse(date)?;
        if let Ok(done) = self.report(app, provider, date).await
            && done.source == "daily"
        {
            return Ok(true);
        }
        if generation == 0 {
            self.reconcile_later(app, provider, date.next(), 0).await?;
        }
        match self.reconcile(app, provider, date, "daily").await {
            Ok(_) => Ok(true),
            // Too old to fetch (a queue that was stopped for months): nothing to do.
            Err(PayError::InvalidBillDate(_)) => Ok(true),
            Err(PayError::BillNotReady(_)) => {
                let check = Check::Bill {
                    provider: provider.name().to_owned(),
                    date: date.to_string(),
                };
                self.queue_check(check, app, LATE_BILL_RETRY_SECS, generation + 1)
                    .await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(no: &str, amount: i64, state: &str, transaction: &str) -> OrderRow {
        OrderRow {
            id: format!("id-{no}"),
            provider: "wechat".into(),
            out_trade_no: no.into(),
            key: None,
            user_id: None,
            amount_fen: amount,
            description: String::new(),
            metadata: "{}".into(),
            state: state.into(),
            refunded_fen: 0,
            reserved_fen: 0,
            transaction_id: Some(transaction.into()),
            prepay: None,
            expires_at_ms: 0,
            paid_at_ms: Some(5),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn payment(no: &str, amount: i64, transaction: &str) -> BillRow {
        BillRow {
            time: "2026-12-02 10:00:00".into(),
            appid: "wx".into(),
            mchid: "1900000000".into(),
            transaction_id: transaction.into(),
            out_trade_no: no.into(),
            kind: BillKind::Payment,
            amount_fen: amount,
            refund_id: None,
            out_refund_no: None,
            refund_fen: 0,
        }
    }

    fn refund_row(no: &str, order_no: &str, fen: i64) -> BillRow {
        BillRow {
            kind: BillKind::Refund,
            refund_id: Some(format!("r-{no}")),
            out_refund_no: Some(no.into()),
            refund_fen: fen,
            ..payment(order_no, 100, "t1")
        }
    }

    fn refund(no: &str, order_no: &str, fen: i64, state: &str, at: i64) -> RefundRow {
        RefundRow {
            out_refund_no: no.into(),
            order_id: format!("id-{order_no}"),
            amount_fen: fen,
            reason: String::new(),
            state: state.into(),
            refund_id: None,
            created_at_ms: at,
            updated_at_ms: at,
        }
    }

    #[test]
    fn every_kind_of_difference_is_found_and_agreement_is_silent() {
        let day_orders = vec![
            order("A", 100, ORDER_PAID, "t1"),
            order("B", 100, ORDER_PAID, "t2"),
            order("MISSING_THERE", 100, ORDER_PAID, "t3"),
        ];
        let mut orders: HashMap<String, OrderRow> = day_orders
            .iter()
            .map(|o| (o.out_trade_no.clone(), o.clone()))
            .collect();
        // Paid there, still created here (its callback lost and unchecked).
        orders.insert("C".into(), order("C", 100, "created", "t4"));
        orders.insert("T".into(), order("T", 100, ORDER_PAID, "t-other"));
        let day_refunds = vec![
            refund("R1", "A", 50, REFUND_SUCCEEDED, 10_000_000),
            refund("R_EARLY", "A", 10, REFUND_SUCCEEDED, 10),
            refund("R_THERE", "A", 10, REFUND_SUCCEEDED, 10_000_000),
        ];
        let mut refunds: HashMap<String, RefundRow> = day_refunds
            .iter()
            .map(|r| (r.out_refund_no.clone(), r.clone()))
            .collect();
        refunds.insert("R2".into(), refund("R2", "B", 20, "pending", 1));
        refunds.insert("R3".into(), refund("R3", "B", 20, REFUND_SUCCEEDED, 1));
        // R4 is of order A; the bill lists it on B.
        refunds.insert("R4".into(), refund("R4", "A", 5, REFUND_SUCCEEDED, 1));
        let rows = vec![
            payment("A", 100, "t1"),
            payment("B", 90, "t2"),
            payment("C", 100, "t4"),
            payment("NOT_HERE", 100, "t9"),
            payment("T", 100, "t5"),
            refund_row("R1", "A", 50),
            refund_row("R2", "B", 20),
            refund_row("R3", "B", 25),
            refund_row("R_NOT_HERE", "B", 5),
            payment("A", 100, "t1"),
            refund_row("R4", "B", 5),
            BillRow {
                kind: BillKind::Other("REVOKED".into()),
                ..payment("D", 1, "t8")
            },
        ];
        let found = compare(&rows, &day_orders, &day_refunds, &orders, &refunds, 1000);
        let mut kinds: Vec<(String, String)> = found
            .items
            .iter()
            .map(|d| {
                (
                    d.kind.clone(),
                    d.out_refund_no.clone().unwrap_or(d.out_trade_no.clone()),
                )
            })
            .collect();
        kinds.sort();
        let expected: Vec<(String, String)> = [
            ("amount", "B"),
            ("duplicate", "A"),
            ("missing_here", "NOT_HERE"),
            ("missing_there", "MISSING_THERE"),
            ("refund_amount", "R3"),
            ("refund_missing_here", "R_NOT_HERE"),
            ("refund_missing_there", "R_THERE"),
            ("refund_order", "R4"),
            ("refund_state", "R2"),
            ("state", "C"),
            ("transaction_id", "T"),
            ("unknown_row", "D"),
        ]
        .iter()
        .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
        .collect();
        assert_eq!(kinds, expected);
        assert_eq!(found.count, 12);
        // The bill and the books agreeing: nothing.
        let agreeing = compare(&rows[..1], &day_orders[..1], &[], &orders, &refunds, 1000);
        assert_eq!(agreeing.count, 0);
    }

    #[test]
    fn a_trade_listed_twice_is_one_duplicate_whichever_line_comes_first() {
        let paid = order("X", 100, ORDER_PAID, "tx");
        let orders: HashMap<String, OrderRow> = [("X".to_owned(), paid.clone())].into();
        for rows in [
            [payment("X", 100, "t-wrong"), payment("X", 100, "tx")],
            [payment("X", 100, "tx"), payment("X", 100, "t-wrong")],
        ] {
            let found = compare(
                &rows,
                std::slice::from_ref(&paid),
                &[],
                &orders,
                &HashMap::new(),
                0,
            );
            let kinds: Vec<&str> = found.items.iter().map(|d| d.kind.as_str()).collect();
            assert_eq!(kinds, ["duplicate"]);
            assert_eq!(found.items[0].there["transaction_id"], "t-wrong");
        }
    }

    #[test]
    fn a_flood_of_one_kind_does_not_hide_the_others() {
        let mine = order("MINE", 100, ORDER_PAID, "t1");
        let rows: Vec<BillRow> = (0..MAX_LISTED_DIFFERENCES + 500)
            .map(|i| payment(&format!("GHOST{i}"), 1, &format!("g{i}")))
            .collect();
        let found = compare(
            &rows,
            std::slice::from_ref(&mine),
            &[],
            &HashMap::new(),
            &HashMap::new(),
            0,
        );
        assert_eq!(found.count, (MAX_LISTED_DIFFERENCES + 501) as u64);
        assert_eq!(found.items.len(), MAX_LISTED_DIFFERENCES);
        assert_eq!(found.items[0].kind, "missing_there", "most pressing first");
        assert_eq!(found.items[0].out_trade_no, "MINE");
    }

    #[test]
    fn bill_dates_are_days_that_exist() {
        assert_eq!(
            BillDate::parse("2026-12-02").unwrap().to_string(),
            "2026-12-02"
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "20261202",
            "2026-12-02x",
            "",
        ] {
            assert!(BillDate::parse(bad).is_err(), "{bad}");
        }
        // 2026-12-02 00:00 China time is 2026-12-01 16:00 UTC.
        let date = BillDate::parse("2026-12-02").unwrap();
        assert_eq!(date.start_ms(), 1_796_140_800_000);
        assert_eq!(BillDate::of_ms(date.start_ms()), date);
        assert_eq!(BillDate::of_ms(date.start_ms() - 1).next(), date);
        assert_eq!(date.ready_ms() - date.start_ms(), 36 * 3600 * 1000);
    }
}
