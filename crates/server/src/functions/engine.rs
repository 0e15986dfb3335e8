//! [`WorkerEngine`]: `cloudlet-core`'s [`Engine`] on `cloudlet-js`'s pool of worker processes.
//! Only conversions live here: the rules are core's, the processes the pool's.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cloudlet_core::functions::{
    CompileFailure, ConsoleLine, Engine, EngineError, HostFailure, HostReply, Ran, Run, RunOutcome,
    ScopedCalls,
};
use cloudlet_js::pool::{Pool, PoolError};
use cloudlet_js::protocol::{Bundle, HostOutcome, Invocation, Limits, Outcome};
use cloudlet_store::AppName;
use serde_json::Value;

/// Runs functions on the worker pool.
pub struct WorkerEngine {
    pub pool: Arc<Pool>,
}

#[async_trait]
impl Engine for WorkerEngine {
    async fn compile(
        &self,
        app: &AppName,
        files: BTreeMap<String, String>,
        entry: String,
    ) -> Result<Result<String, CompileFailure>, EngineError> {
        match self.pool.compile(app.as_str(), files, entry).await {
            Ok(Ok(bundle)) => serde_json::to_string(&bundle)
                .map(Ok)
                .map_err(|e| EngineError(e.to_string())),
            Ok(Err(e)) => Ok(Err(CompileFailure {
                file: e.file,
                line: e.line,
                column: e.column,
                message: e.message,
            })),
            Err(e) => Err(EngineError(e.to_string())),
        }
    }

    async fn run(&self, run: Run, host: Arc<ScopedCalls>) -> Result<Ran, EngineError> {
        let invocation = Invocation {
            // The pool numbers it.
            id: 0,
            key: run.key,
            bundle: None,
            event: run.event,
            context: run.context,
            limits: Limits {
                memory_bytes: run.limits.memory_bytes,
                stack_bytes: run.limits.stack_bytes,
                timeout_ms: run.limits.timeout_ms,
                max_result_bytes: run.limits.max_result_bytes,
                max_log_lines: run.limits.max_log_lines,
            },
            seed: run.seed,
        };
        let code = Arc::clone(&run.bundle);
        let bundle = move || serde_json::from_str::<Bundle>(&code).map_err(|e| e.to_string());
        let finished = self
            .pool
            .invoke(&run.app, invocation, &bundle, &HostBridge(host))
            .await
            .map_err(|e| match e {
                PoolError::Died(_)
                | PoolError::Spawn(_)
                | PoolError::Closed
                | PoolError::BadCode(_) => EngineError(e.to_string()),
            })?;
        Ok(Ran {
            outcome: match finished.outcome {
                Outcome::Ok { json } => RunOutcome::Ok(json),
                Outcome::Error { message, stack } => RunOutcome::Error { message, stack },
                Outcome::Timeout => RunOutcome::Timeout,
                Outcome::MemoryLimit => RunOutcome::MemoryLimit,
                Outcome::ResultTooLarge { bytes } => RunOutcome::ResultTooLarge(bytes),
            },
            logs: finished
                .logs
                .into_iter()
                .map(|l| ConsoleLine {
                    level: l.level,
                    message: l.message,
                    at_us: l.at_us,
                })
                .collect(),
            logs_dropped: finished.logs_dropped,
            memory_bytes: finished.memory_bytes,
            cold: finished.cold,
            micros: finished.micros,
        })
    }
}

/// The pool's host calls answered by the invocation's capabilities.
struct HostBridge(Arc<ScopedCalls>);

#[async_trait]
impl cloudlet_js::pool::Host for HostBridge {
    async fn call(&self, capability: &str, args: Value, bytes: Vec<u8>) -> (HostOutcome, Vec<u8>) {
        match self.0.call(capability, args, bytes).await {
            Ok(HostReply { value, bytes }) => (HostOutcome::Ok { value }, bytes),
            Err(HostFailure { code, message }) => {
                (HostOutcome::Error { code, message }, Vec::new())
            }
        }
    }
}
