//! A day's trade bill as both platforms' bills are read: one row per payment or refund, in
//! the words reconciliation compares with the orders.

/// The most lines a bill may have: a bill past it is refused, not compared in part.
pub const MAX_BILL_ROWS: usize = 2_000_000;
/// How long a bill's download may take (a day's bill is tens of megabytes).
pub const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Where each of `names` is in a bill's header line, or the first of them it lacks.
pub(crate) fn columns<'a, const N: usize>(
    header: &[&str],
    names: [&'a str; N],
) -> Result<[usize; N], &'a str> {
    let mut at = [0; N];
    for (slot, name) in at.iter_mut().zip(names) {
        *slot = header.iter().position(|h| *h == name).ok_or(name)?;
    }
    Ok(at)
}

/// What a bill line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillKind {
    /// A payment (WeChat Pay `SUCCESS`, Alipay `交易`).
    Payment,
    /// A refund (WeChat Pay `REFUND`, Alipay `退款`).
    Refund,
    /// Anything else the platform may list (kept, so it is reported rather than dropped).
    Other(String),
}

/// One line of a trade bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    /// China time, `YYYY-MM-DD HH:MM:SS`.
    pub time: String,
    pub appid: String,
    pub mchid: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub kind: BillKind,
    /// The order's amount, in fen (0 on an Alipay refund line, which does not repeat it).
    pub amount_fen: i64,
    /// For a refund line: its numbers and amount.
    pub refund_id: Option<String>,
    pub out_refund_no: Option<String>,
    pub refund_fen: i64,
}
