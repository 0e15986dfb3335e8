//! `cloudlet pay …`: an app's payments through the admin API: its orders, one order with its
//! refunds and events, a refund, and closing an unpaid order.

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
}

/// `/v1/admin/apps/{app}/pay/orders/{id}`, refusing ids that could change the URL.
fn order_path(app: &str, id: &str) -> Result<String, String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
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
            if let Some(id) = order["transaction_id"].as_str() {
                println!("  transaction {id}  paid {}", text(&order["paid_at"]));
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
    }
    Ok(())
}
