//! The background loop that runs functions on cron schedules, as the admin: rules do not
//! apply. (Data triggers and queues are delivered by the queue dispatcher, `crate::queues`.)

use std::time::Duration;

use cloudlet_core::access::Caller;
use cloudlet_core::functions::Trigger;

use super::{raw, run};
use crate::state::AppState;

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
