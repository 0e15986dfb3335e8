//! `cloudlet pay …`: an app's payments through the admin API: its orders, one order with its
//! refunds and events, a refund, closing an unpaid order, the platforms' kept notifications
//! and their replay, and the daily bill's reconciliation reports.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Api, Connection, app_path, print_json, text};

#[derive(Subcommand)]
pub enum PayCommand {
    /// List an app's orders, newest first.
    Orders {
        app: String,
        /// Only orders in this state: created, paid, partly_refunded, refunded, closed.
        #[arg(long)]
        state: Option<String>,
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show an order with its refunds and the events that moved it.
    Show { app: String, id: String },
    /// Refund (part of) a paid order; AMOUNT is in fen. The same --number again is the same
    /// refund.
    Refund {
        app: String,
        id: String,
        amount: i64,
        #[arg(long)]
        number: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Close an unpaid order (on the payment platform first).
    Close { app: String, id: String },
    /// List the platforms' notifications that verified, newest first, with what handling them
    /// did.
    Callbacks {
        app: String,
        /// Only this order's.
        #[arg(long)]
        order: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Replay a kept notification: verified again with the merchant's keys, then applied;
    /// noted on its order's timeline.
    Replay { app: String, id: String },
    /// Compare a day's trade bill (YYYY-MM-DD, China time) with the orders now, and keep the
    /// report.
    Reconcile {
        app: String,
        date: String,
        #[arg(long, default_value = "wechat")]
        provider: String,
    },
    /// List the kept reconciliation reports, newest day first.
    Reports { app: String },
    /// Show a kept reconciliation report with its differences.
    Report {
        app: String,
        date: String,
        #[arg(long, default_value = "wechat")]
        provider: String,
    },
}

/// `/v1/admin/apps/{app}/pay/callbacks/{id}`, refusing ids that could change the URL.
fn callback_path(app: &str, id: &str) -> Result<String, String> {
    if !plain_id(id) {
        return Err(format!("{id:?} is not a callback id"));
    }
    Ok(format!("{}/pay/callbacks/{id}", app_path(app)?))
}

fn plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `/v1/admin/apps/{app}/pay/reconciliations/{provider}/{date}`, refusing what is not a
/// provider or a date before it reaches a URL.
fn report_path(app: &str, provider: &str, date: &str) -> Result<String, String> {
    if !provider.bytes().all(|b| b.is_ascii_lowercase()) || provider.is_empty() {
        return Err(format!("{provider:?} is not a payment provider"));
    }
    if date.len() != 10 || !date.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(format!("{date:?} is not a date (YYYY-MM-DD)"));
    }
    Ok(format!(
        "{}/pay/reconciliations/{provider}/{date}",
        app_path(app)?
    ))
}

/// A report's summary and its differences, one per line.
fn print_report(report: &Value) {
    let totals = |side: &Value| {
        format!(
            "{} payments {} yuan, {} refunds {} yuan",
            side["payments"],
            fen(&side["paid_fen"]),
            side["refunds"],
            fen(&side["refunded_fen"])
        )
    };
    println!(
        "{} {}: {} difference(s)  (checked {}, {})",
        text(&report["provider"]),
        text(&report["bill_date"]),
        report["differences"],
        text(&report["checked_at"]),
        text(&report["source"])
    );
    if report["bill_found"] == false {
        println!("  no bill: the platform had no trades that day");
    }
    println!("  bill: {}", totals(&report["bill"]));
    println!("  here: {}", totals(&report["here"]));
    for d in report["items"].as_array().into_iter().flatten() {
        let number = match d["out_refund_no"].is_string() {
            true => format!(
                "{} refund {}",
                text(&d["out_trade_no"]),
                text(&d["out_refund_no"])
            ),
            false => text(&d["out_trade_no"]).into_owned(),
        };
        println!(
            "  {:<22} {}  here {}  there {}",
            text(&d["kind"]),
            number,
            d["here"],
            d["there"]
        );
    }
}

/// `/v1/admin/apps/{app}/pay/orders/{id}`, refusing ids that could change the URL.
fn order_path(app: &str, id: &str) -> Result<String, String> {
    if !plain_id(id) {
        return Err(format!("{id:?} is not an order id"));
    }
    Ok(format!("{}/pay/orders/{id}", app_path(app)?))
}

fn fen(value: &Value) -> String {
    let fen = value.as_i64().unwrap_or(0);
    format!("{}.{:02}", fen / 100, fen % 100)
}

pub async fn run(connection: Connection, command: PayCommand) -> Result<(), String> {
    let api = Api::new(&connection)?;
    let json = connection.json;
    match command {
        PayCommand::Orders {
            app,
            state,
            user,
            limit,
        } => {
            let mut url = reqwest::Url::parse("http://x/").map_err(|e| e.to_string())?;
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("limit", &limit.to_string());
                if let Some(state) = &state {
                    query.append_pair("state", state);
                }
                if let Some(user) = &user {
                    query.append_pair("user", user);
                }
            }
            let path = format!(
                "{}/pay/orders?{}",
                app_path(&app)?,
                url.query().unwrap_or_default()
            );
            let page = api.call(Method::GET, &path, None).await?;
            if json {
                return print_json(&page);
            }
            println!(
                "{:<36} {:<16} {:>10} {:>10}  {:<24} DESCRIPTION",
                "ORDER", "STATE", "AMOUNT", "REFUNDED", "CREATED"
            );
            for o in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<36} {:<16} {:>10} {:>10}  {:<24} {}",
                    text(&o["id"]),
                    text(&o["state"]),
                    fen(&o["amount_fen"]),
                    fen(&o["refunded_fen"]),
                    text(&o["created_at"]),
                    text(&o["description"])
                );
            }
        }
        PayCommand::Show { app, id } => {
            let order = api.call(Method::GET, &order_path(&app, &id)?, None).await?;
            if json {
                return print_json(&order);
            }
            println!(
                "{}  {}  {} yuan",
                text(&order["id"]),
                text(&order["state"]),
                fen(&order["amount_fen"])
            );
            println!("  {}", text(&order["description"]));
            println!(
                "  user {}  out_trade_no {}",
                text(&order["user_id"]),
                text(&order["out_trade_no"])
            );
            if order["transaction_id"].is_string() {
                println!(
                    "  transaction {}  paid {}",
                    text(&order["transaction_id"]),
                    text(&order["paid_at"])
                );
            }
            for r in order["refunds"].as_array().into_iter().flatten() {
                println!(
                    "  refund {}  {}  {} yuan  {}",
                    text(&r["out_refund_no"]),
                    text(&r["state"]),
                    fen(&r["amount_fen"]),
                    text(&r["reason"])
                );
            }
            for e in order["events"].as_array().into_iter().flatten() {
                println!(
                    "  event {}  from {}  at {}",
                    text(&e["name"]),
                    text(&e["source"]),
                    text(&e["at"])
                );
            }
        }
        PayCommand::Refund {
            app,
            id,
            amount,
            number,
            reason,
        } => {
            let mut body = json!({ "amount_fen": amount });
            if let Some(number) = number {
                body["out_refund_no"] = json!(number);
            }
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            let path = format!("{}/refunds", order_path(&app, &id)?);
            let refund = api.call(Method::POST, &path, Some(body)).await?;
            if json {
                return print_json(&refund);
            }
            println!(
                "Refund {} of {} yuan: {}",
                text(&refund["out_refund_no"]),
                fen(&refund["amount_fen"]),
                text(&refund["state"])
            );
        }
        PayCommand::Close { app, id } => {
            let path = format!("{}/close", order_path(&app, &id)?);
            let order = api.call(Method::POST, &path, None).await?;
            if json {
                return print_json(&order);
            }
            println!("Order {} is {}", text(&order["id"]), text(&order["state"]));
        }
        PayCommand::Callbacks { app, order, limit } => {
            let mut path = format!("{}/pay/callbacks?limit={limit}", app_path(&app)?);
            if let Some(order) = order {
                if !plain_id(&order) {
                    return Err(format!("{order:?} is not an order id"));
                }
                path.push_str(&format!("&order={order}"));
            }
            let list = api.call(Method::GET, &path, None).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<36} {:<7} {:>7}  {:<24} {:<36} OUTCOME",
                "CALLBACK", "FROM", "HANDLED", "RECEIVED", "ORDER"
            );
            for c in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<36} {:<7} {:>7}  {:<24} {:<36} {}",
                    text(&c["id"]),
                    text(&c["provider"]),
                    c["handled"],
                    text(&c["received_at"]),
                    text(&c["order_id"]),
                    text(&c["outcome"])
                );
            }
        }
        PayCommand::Replay { app, id } => {
            let path = format!("{}/replay", callback_path(&app, &id)?);
            let replayed = api.call(Method::POST, &path, None).await?;
            if json {
                return print_json(&replayed);
            }
            println!(
                "Callback {} replayed: {} (order {})",
                text(&replayed["id"]),
                text(&replayed["outcome"]),
                text(&replayed["order_id"])
            );
        }
        PayCommand::Reconcile {
            app,
            date,
            provider,
        } => {
            // Checked as the report's path would be, though sent in the body.
            report_path(&app, &provider, &date)?;
            let path = format!("{}/pay/reconciliations", app_path(&app)?);
            let body = json!({ "provider": provider, "date": date });
            let report = api.call(Method::POST, &path, Some(body)).await?;
            if json {
                return print_json(&report);
            }
            print_report(&report);
        }
        PayCommand::Reports { app } => {
            let path = format!("{}/pay/reconciliations", app_path(&app)?);
            let list = api.call(Method::GET, &path, None).await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<8} {:<10} {:>11}  CHECKED",
                "PROVIDER", "DATE", "DIFFERENCES"
            );
            for r in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<10} {:>11}  {}",
                    text(&r["provider"]),
                    text(&r["bill_date"]),
                    r["differences"],
                    text(&r["checked_at"])
                );
            }
        }
        PayCommand::Report {
            app,
            date,
            provider,
        } => {
            let report = api
                .call(Method::GET, &report_path(&app, &provider, &date)?, None)
                .await?;
            if json {
                return print_json(&report);
            }
            print_report(&report);
        }
    }
    Ok(())
}
