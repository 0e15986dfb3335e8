//! The background loop that enqueues the runs of functions' cron schedules. Each due tick's run
//! goes to the app's triggers' queue under the tick's key, and only then is the schedule moved
//! on: a tick is enqueued once however many nodes read it due, and a node killed between the
//! two leaves the tick due for the next look (here or on another node), whose enqueue is a
//! no-op. The dispatcher (`crate::queues`) runs it, as the admin, at least once.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::state::AppState;

/// How many due ticks one look reads, besides those waiting after a failure.
const LOOK: usize = 100;
/// How many of them may be one app's: an app whose schedules are due faster than this node
/// enqueues them falls behind on its own, and the others' ticks still go every second.
const LOOK_PER_APP: usize = 10;
/// How long a tick whose enqueue failed (its app's database out of reach) waits before this
/// node tries it again: meanwhile it is read past, so that it holds no other schedule back.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Enqueues the runs of the schedules that are due, checking every second until shutdown.
pub async fn run_schedules(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ticks whose enqueue failed, by key, and when to try them again.
    let mut failing: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = Instant::now();
        failing.retain(|_, again| *again > now);
        let due = match state
            .functions()
            .due_ticks(LOOK + failing.len(), LOOK_PER_APP + failing.len())
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the schedules");
                continue;
            }
        };
        for tick in due {
            let key = format!("{}/{}", tick.row.app, tick.key());
            if failing.contains_key(&key) {
                continue;
            }
            let (app, function) = (&tick.row.app, &tick.row.function);
            let sent = state
                .queues()
                .send_tick(app, function, tick.key(), tick.event.clone())
                .await;
            if let Err(e) = sent {
                // Left due: tried again later, here or by another node.
                tracing::warn!(app = %app, function, error = %e, "could not enqueue a scheduled run");
                failing.insert(key, now + AFTER_FAILURE);
                continue;
            }
            if let Err(e) = state.functions().advance(&tick).await {
                tracing::warn!(app = %app, function, error = %e, "could not move a schedule on");
            }
        }
    }
}
