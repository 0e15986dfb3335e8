//! What this node does when another node of the same database rings ([`cloudlet_store::Bell`]):
//! it drops what it cached of the app (collections and rules, functions, keys and revocations,
//! realtime settings, declared queues) and reads the app's event log for its realtime
//! subscribers. When rings may have been missed (the listening connection was lost), it drops
//! everything cached and reads every followed log. It also sweeps the rate limits the nodes
//! share.

use cloudlet_core::realtime::AppSockets;
use cloudlet_store::{Bell, Ring, Topic, Topics};
use tokio::sync::{broadcast, watch};

use crate::state::AppState;

/// Deletes the shared rate-limit buckets that are full again, every ten minutes, until
/// shutdown (each node does; deleting twice deletes nothing).
pub(crate) async fn sweep_rate_buckets(
    rates: crate::limits::Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = rates.store.sweep_buckets(rates.now_us()).await {
            tracing::warn!(error = %e, "could not sweep the shared rate limits");
        }
    }
}

/// Hears the other nodes until shutdown.
pub(crate) async fn hear(
    state: AppState,
    bell: std::sync::Arc<dyn Bell>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rings = bell.rings();
    loop {
        let ring = tokio::select! {
            ring = rings.recv() => ring,
            _ = shutdown.changed() => return,
        };
        match ring {
            Ok(Ring::App(app, topics)) => heard(&state, &app, topics).await,
            Ok(Ring::Everything) | Err(broadcast::error::RecvError::Lagged(_)) => {
                skip_waiting(&mut rings);
                heard_everything(&state).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Skips the rings already waiting, before a pass over everything that covers them: a burst
/// of passes (as a flood of malformed rings makes) costs one, not one each.
fn skip_waiting(rings: &mut broadcast::Receiver<Ring>) {
    use broadcast::error::TryRecvError;
    while !matches!(
        rings.try_recv(),
        Err(TryRecvError::Empty | TryRecvError::Closed)
    ) {}
}

async fn heard(state: &AppState, app: &cloudlet_store::AppName, topics: Topics) {
    if topics.has(Topic::Collections) {
        state.data().forget_app(app);
    }
    if topics.has(Topic::Functions) {
        state.functions().heard(app);
    }
    if topics.has(Topic::Queues) {
        state.queues().heard(app);
    }
    if topics.has(Topic::Realtime) {
        state.realtime().heard_settings(app).await;
    }
    if topics.has(Topic::Keys) {
        state.access().forget_app(app);
        state.realtime().check_keys(app).await;
    }
    if topics.has(Topic::Auth) && !state.auth().heard(app).await {
        // Deleted on another node: nothing of it may go on here.
        state.access().forget_app(app);
        state.realtime().close_app(app, AppSockets::All).await;
        state.data().forget_app(app);
        state.files().forget(app);
        state.functions().heard(app);
        state.queues().heard(app);
    }
    if topics.has(Topic::Records) {
        state.data().heard(app);
    }
    if topics.has(Topic::Buckets) {
        state.files().forget(app);
    }
    if topics.has(Topic::Messages) {
        state.realtime().heard_relay();
    }
}

async fn heard_everything(state: &AppState) {
    tracing::info!("the other nodes' rings may have been missed: every cache is dropped");
    state.data().forget_all();
    state.files().forget_all();
    state.functions().heard_everything();
    state.queues().heard_everything();
    state.auth().heard_everything();
    state.access().forget_all();
    state.realtime().heard_everything().await;
    state.realtime().recheck(state.auth()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_rings_before_a_pass_over_everything_is_skipped_whole() {
        let (bell, mut rings) = broadcast::channel(4);
        // More than the channel holds: the receiver lags, and goes on past it.
        for _ in 0..10 {
            let _ = bell.send(Ring::Everything);
        }
        skip_waiting(&mut rings);
        assert!(matches!(
            rings.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        // What comes after the pass began is heard.
        let _ = bell.send(Ring::Everything);
        assert_eq!(rings.try_recv().unwrap(), Ring::Everything);
    }
}
