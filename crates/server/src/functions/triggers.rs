//! The background loops that run functions without a client: data triggers (on committed
//! writes) and cron schedules. Both run as the admin: rules do not apply.

use std::time::Duration;

use cloudlet_core::access::Caller;
use cloudlet_core::data::{ChangeEvent, TRIGGER_DEPTH};
use cloudlet_core::functions::{MAX_TRIGGER_DEPTH, Trigger};
use serde_json::json;

use super::{raw, run};
use crate::state::AppState;

/// Runs the functions whose triggers match each committed write, as the admin (rules do not
/// apply), until shutdown. Best effort: an event missed while the bus overflowed is logged, not
/// replayed.
pub async fn run_triggers(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut events = state.data().subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.changed() => return,
        };
        match event {
            Ok(event) if event.depth >= MAX_TRIGGER_DEPTH => {
                tracing::warn!(
                    app = %event.app,
                    collection = event.collection,
                    "a write by triggered functions {MAX_TRIGGER_DEPTH} deep triggers nothing more"
                );
            }
            Ok(event) => {
                state.tasks().spawn(run_triggered(state.clone(), event));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "function triggers missed data events");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn run_triggered(state: AppState, event: ChangeEvent) {
    let functions = state.functions();
    let names = match functions
        .triggered_by(&event.app, &event.collection, event.operation)
        .await
    {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(app = %event.app, error = %e, "could not look up triggers");
            return;
        }
    };
    for name in names {
        let run_state = state.clone();
        let event = event.clone();
        state.tasks().spawn(TRIGGER_DEPTH.scope(event.depth + 1, async move {
            let state = run_state;
            let request_id = state.new_request_id();
            let payload = raw(&json!({
                "collection": event.collection,
                "id": event.id,
                "operation": event.operation,
                "old": event.old,
                "new": event.new,
            }));
            // The outcome is in the function log.
            let outcome = match payload {
                Ok(payload) => run(&state, &event.app, &name, Caller::Admin, Trigger::Data, &request_id, payload).await,
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::debug!(app = %event.app, function = name, error = %e, "a triggered function failed");
            }
        }));
    }
}

/// Runs the functions whose schedules are due, as the admin, checking every second until
/// shutdown.
pub async fn run_schedules(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due = match state.functions().claim_due(100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the schedules");
                continue;
            }
        };
        for (schedule, event) in due {
            let run_state = state.clone();
            state.tasks().spawn(async move {
                let state = run_state;
                let request_id = state.new_request_id();
                let (app, name) = (&schedule.app, &schedule.function);
                let outcome = match raw(&event) {
                    Ok(event) => {
                        run(
                            &state,
                            app,
                            name,
                            Caller::Admin,
                            Trigger::Schedule,
                            &request_id,
                            event,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = outcome {
                    tracing::debug!(app = %schedule.app, function = schedule.function, error = %e, "a scheduled run failed");
                }
            });
        }
    }
}
