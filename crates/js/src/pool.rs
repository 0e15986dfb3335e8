//! The server's side of the workers: a bounded set of `cloudlet worker` processes, each running
//! one invocation at a time.
//!
//! An invocation takes an idle worker (preferring one that already has its code, so it finds its
//! runtime warm), or starts one if fewer than `max_workers` run; otherwise it waits its turn. While
//! it runs, the pool answers its host calls through [`Host`]. If it has not finished by its
//! deadline plus a grace period (the engine's interrupt hook does not fire inside one long
//! built-in call), the worker is killed and a fresh one takes its place on the next call.
//! Workers idle for `idle_timeout` exit, so an idle instance runs none.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::protocol::{
    Bundle, CompileError, Finished, FromWorker, HostOutcome, Invocation, MAX_FRAME, Outcome,
    ToWorker,
};

/// How long compiling a deploy may take before its worker is killed.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The executable and arguments that start a worker (`cloudlet worker`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub max_workers: usize,
    /// How long past its deadline an invocation may run before its worker is killed.
    pub grace: Duration,
    pub idle_timeout: Duration,
}

/// Answers the host calls of a running invocation.
#[async_trait]
pub trait Host: Send + Sync {
    async fn call(&self, method: &str, args: serde_json::Value) -> HostOutcome;
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("could not start a worker: {0}")]
    Spawn(std::io::Error),
    #[error("the worker stopped: {0}")]
    Died(String),
    #[error("the worker pool is closed")]
    Closed,
    #[error("the stored code is unreadable: {0}")]
    BadCode(String),
}

pub struct Pool {
    options: PoolOptions,
    idle: Mutex<Vec<(Worker, Instant)>>,
    slots: Semaphore,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The code keys this worker has been sent.
    loaded: HashSet<String>,
}

impl Pool {
    /// Must be called inside the tokio runtime: a task lets idle workers go.
    pub fn new(options: PoolOptions) -> Arc<Self> {
        let every =
            (options.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let pool = Arc::new(Pool {
            slots: Semaphore::new(options.max_workers.max(1)),
            options,
            idle: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = weak.upgrade() else { return };
                pool.prune();
            }
        });
        pool
    }

    /// Lets workers idle past `idle_timeout` go (dropping one kills it).
    fn prune(&self) {
        let timeout = self.options.idle_timeout;
        self.lock_idle()
            .retain(|(_, since)| since.elapsed() < timeout);
    }

    /// Compiles sources to bytecode in a worker.
    pub async fn compile(
        &self,
        files: BTreeMap<String, String>,
        entry: String,
    ) -> Result<Result<Bundle, CompileError>, PoolError> {
        let _slot = self.slots.acquire().await.map_err(|_| PoolError::Closed)?;
        let mut worker = self.take(None).await?;
        let exchange = async {
            worker.send(&ToWorker::Compile { files, entry }).await?;
            worker.receive().await
        };
        match tokio::time::timeout(COMPILE_TIMEOUT, exchange).await {
            Ok(Ok(FromWorker::Compiled { outcome })) => {
                self.put_back(worker);
                Ok(outcome)
            }
            Ok(Ok(other)) => {
                worker.kill();
                Err(PoolError::Died(format!("unexpected {other:?}")))
            }
            Ok(Err(e)) => {
                worker.kill();
                Err(e)
            }
            Err(_) => {
                worker.kill();
                Err(PoolError::Died("compiling took too long".into()))
            }
        }
    }

    /// Runs an invocation; `bundle` gives its code when the worker does not have it yet.
    pub async fn invoke(
        &self,
        mut invocation: Invocation,
        bundle: &(dyn Fn() -> Result<Bundle, String> + Send + Sync),
        host: &dyn Host,
    ) -> Result<Finished, PoolError> {
        let _slot = self.slots.acquire().await.map_err(|_| PoolError::Closed)?;
        let started = Instant::now();
        let mut worker = self.take(Some(&invocation.key)).await?;
        let hard_deadline =
            Duration::from_millis(invocation.limits.timeout_ms) + self.options.grace;
        if !worker.loaded.contains(&invocation.key) {
            invocation.bundle = Some(bundle().map_err(PoolError::BadCode)?);
        }
        let key = invocation.key.clone();
        let exchange = async {
            worker
                .send(&ToWorker::Invoke(Box::new(invocation.clone())))
                .await?;
            loop {
                match worker.receive().await? {
                    FromWorker::HostCall { call, method, args } => {
                        let outcome = host.call(&method, args).await;
                        worker.send(&ToWorker::HostReply { call, outcome }).await?;
                    }
                    FromWorker::NeedCode { .. } => {
                        invocation.bundle = Some(bundle().map_err(PoolError::BadCode)?);
                        worker
                            .send(&ToWorker::Invoke(Box::new(invocation.clone())))
                            .await?;
                    }
                    FromWorker::Finished(finished) => return Ok(*finished),
                    other => return Err(PoolError::Died(format!("unexpected {other:?}"))),
                }
            }
        };
        match tokio::time::timeout(hard_deadline, exchange).await {
            Ok(Ok(finished)) => {
                worker.loaded.insert(key);
                self.put_back(worker);
                Ok(finished)
            }
            Ok(Err(e)) => {
                worker.kill();
                Err(e)
            }
            Err(_) => {
                tracing::warn!(
                    key,
                    "an invocation outran its deadline: its worker was killed"
                );
                worker.kill();
                Ok(Finished {
                    outcome: Outcome::Timeout,
                    logs: Vec::new(),
                    logs_dropped: 0,
                    memory_bytes: 0,
                    cold: false,
                    micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                })
            }
        }
    }

    /// Workers running now and waiting for work.
    pub fn idle_workers(&self) -> usize {
        self.lock_idle().len()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(Worker, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle worker (one with `key` loaded if any), or a new one.
    async fn take(&self, key: Option<&str>) -> Result<Worker, PoolError> {
        let found = {
            let mut idle = self.lock_idle();
            let timeout = self.options.idle_timeout;
            // Workers idle too long exit (their drop kills them).
            idle.retain(|(_, since)| since.elapsed() < timeout);
            let position = key
                .and_then(|key| idle.iter().position(|(w, _)| w.loaded.contains(key)))
                .or_else(|| idle.len().checked_sub(1));
            position.map(|i| idle.swap_remove(i).0)
        };
        match found {
            Some(worker) => Ok(worker),
            None => self.spawn().await,
        }
    }

    fn put_back(&self, worker: Worker) {
        self.lock_idle().push((worker, Instant::now()));
    }

    async fn spawn(&self) -> Result<Worker, PoolError> {
        let mut child = Command::new(&self.options.program)
            .args(&self.options.args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(PoolError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(PoolError::Died("no pipes".into()));
        };
        let mut worker = Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            loaded: HashSet::new(),
        };
        match worker.receive().await? {
            FromWorker::Ready => Ok(worker),
            other => Err(PoolError::Died(format!("unexpected {other:?}"))),
        }
    }
}

impl Worker {
    async fn send(&mut self, message: &ToWorker) -> Result<(), PoolError> {
        let body = serde_json::to_vec(message).map_err(|e| PoolError::Died(e.to_string()))?;
        let length = u32::try_from(body.len()).map_err(|e| PoolError::Died(e.to_string()))?;
        // One write, one system call.
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&length.to_le_bytes());
        frame.extend_from_slice(&body);
        let write = async {
            self.stdin.write_all(&frame).await?;
            self.stdin.flush().await
        };
        write.await.map_err(|e| PoolError::Died(e.to_string()))
    }

    async fn receive(&mut self) -> Result<FromWorker, PoolError> {
        let died = |e: std::io::Error| PoolError::Died(e.to_string());
        let mut length = [0u8; 4];
        self.stdout.read_exact(&mut length).await.map_err(died)?;
        let length = u32::from_le_bytes(length) as usize;
        if length > MAX_FRAME {
            return Err(PoolError::Died(format!("a frame of {length} bytes")));
        }
        let mut body = vec![0u8; length];
        self.stdout.read_exact(&mut body).await.map_err(died)?;
        serde_json::from_slice(&body).map_err(|e| PoolError::Died(e.to_string()))
    }

    fn kill(mut self) {
        let _ = self.child.start_kill();
        // Reap it off the request path.
        tokio::spawn(async move {
            let _ = self.child.wait().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;

    struct NoHost;

    #[async_trait]
    impl Host for NoHost {
        async fn call(&self, _: &str, _: serde_json::Value) -> HostOutcome {
            HostOutcome::Error {
                code: "none".into(),
                message: "none".into(),
            }
        }
    }

    /// A worker that says it is ready and then never answers, as one stuck inside a long
    /// built-in call would be.
    fn stuck_pool() -> Arc<Pool> {
        Pool::new(PoolOptions {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                r#"printf '\007\000\000\000"ready"'; exec sleep 30"#.into(),
            ],
            max_workers: 1,
            grace: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(60),
        })
    }

    fn invocation() -> Invocation {
        Invocation {
            key: "app/f/1".into(),
            bundle: None,
            event: serde_json::Value::Null,
            context: serde_json::Value::Null,
            limits: Limits {
                memory_bytes: 1 << 20,
                stack_bytes: 1 << 16,
                timeout_ms: 200,
                max_result_bytes: 1 << 20,
                max_log_lines: 1,
            },
            seed: [0; 32],
        }
    }

    #[tokio::test]
    async fn a_worker_past_its_hard_deadline_is_killed_and_the_call_times_out() {
        let pool = stuck_pool();
        let bundle = || {
            Ok(Bundle {
                engine: String::new(),
                entry: "index.js".into(),
                modules: BTreeMap::new(),
            })
        };
        let started = Instant::now();
        let finished = pool.invoke(invocation(), &bundle, &NoHost).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(finished.outcome, Outcome::Timeout);
        // Deadline 200 ms plus grace 100 ms; not the worker's 30 s.
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        // The killed worker is not kept; the slot is free for the next call.
        assert_eq!(pool.idle_workers(), 0);
        let again = pool.invoke(invocation(), &bundle, &NoHost).await.unwrap();
        assert_eq!(again.outcome, Outcome::Timeout);
    }
}
