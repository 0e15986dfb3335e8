//! QuickJS inside a worker: compiling sources to bytecode, and running invocations of compiled
//! functions in runtimes that each belong to one function version.
//!
//! A runtime is created on a version's first invocation (a cold start: a fresh runtime and
//! context, the prelude, the modules loaded from bytecode) and kept warm for the next ones until
//! it idles out or the cache is full. One invocation runs at a time; it ends when the function's
//! promise settles, when it overruns its deadline (the interrupt handler stops JavaScript; the
//! wait for host replies and timers stops at the deadline too), or when it exhausts its memory.
//! A runtime that timed out or ran out of memory is dropped, never reused.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rquickjs::loader::{Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Persistent, Promise,
    Runtime, Value, WriteOptions, promise::PromiseState,
};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::protocol::{
    Bundle, CompileError, Finished, HostOutcome, Invocation, Limits, LogLine, MAX_HOST_CALL,
    Outcome, Shim,
};

const PRELUDE: &str = include_str!("prelude.js");
/// The warm runtimes of one worker keep at most this much heap between them.
const WARM_HEAP_BUDGET: usize = 512 * 1024 * 1024;
/// How often a warm runtime's heap is measured (see `Instance::memory`).
const MEMORY_SAMPLE_EVERY: u64 = 16;
/// The longest console line kept.
const MAX_LOG_LINE: usize = 8 * 1024;
/// The most bytes of console lines kept per invocation, whatever their number: an app's log
/// keeps thousands of invocations, and each is one row.
const MAX_LOG_BYTES: usize = 32 * 1024;

/// Names the bytecode format: a digest of a probe module's bytecode, so that any change of the
/// engine (whose bytecode is only readable by the same build) asks for a new compile.
pub fn engine_version() -> String {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            let probe = || -> rquickjs::Result<Vec<u8>> {
                let runtime = Runtime::new()?;
                let context = Context::full(&runtime)?;
                context.with(|ctx| {
                    Module::declare(
                        ctx,
                        "probe.js",
                        "export default async (a, b) => [a?.b, `${b}`];",
                    )?
                    .write(WriteOptions::default())
                })
            };
            match probe() {
                Ok(bytes) => format!("quickjs-{}", hex_prefix(&Sha256::digest(bytes))),
                Err(e) => format!("quickjs-unknown-{e}"),
            }
        })
        .clone()
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A host call's answer as it comes back: the call it answers, its outcome, and its bytes.
pub type HostAnswer = (u64, HostOutcome, Vec<u8>);

/// What an invocation waits on outside the runtime: the server's replies to host calls.
pub trait HostIo {
    /// Sends a host call of the running invocation to the server, with its bytes.
    fn call(&mut self, call: u64, capability: &str, args: serde_json::Value, bytes: Vec<u8>);
    /// Waits until `until` for the reply to a host call; `None` when the time came first.
    fn reply(&mut self, until: Instant) -> Option<HostAnswer>;
    /// Waits until `until` with no host call outstanding (for a timer).
    fn pause(&mut self, until: Instant) {
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }
}

/// The prelude as module bytecode, compiled once per process: parsing it took a millisecond,
/// most of a cold start; loading its bytecode takes a fraction of that.
fn prelude_bytecode() -> Result<&'static [u8], String> {
    static BYTECODE: std::sync::OnceLock<Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    BYTECODE
        .get_or_init(|| {
            let runtime = Runtime::new().map_err(|e| e.to_string())?;
            let context = Context::full(&runtime).map_err(|e| e.to_string())?;
            context.with(|ctx| {
                Module::declare(
                    ctx.clone(),
                    PRELUDE_NAME,
                    format!("export default {PRELUDE}"),
                )
                .and_then(|module| module.write(WriteOptions::default()))
                .catch(&ctx)
                .map_err(|e| e.to_string())
            })
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

const PRELUDE_NAME: &str = "cloudlet:prelude";

/// Does the once-per-process work (the prelude's bytecode, the engine's version) ahead of the
/// first invocation.
pub fn warm_up() {
    let _ = prelude_bytecode();
    let _ = engine_version();
}

/// Runs the prelude in a new context and returns its driver (settles host calls, fires timers,
/// runs the handler).
fn load_prelude<'js>(ctx: &Ctx<'js>) -> Result<Object<'js>, CaughtError<'js>> {
    let bytes = prelude_bytecode()
        .map_err(|e| CaughtError::Error(rquickjs::Error::new_loading_message(PRELUDE_NAME, e)))?;
    // SAFETY: the bytecode was written by `prelude_bytecode` in this process, by this engine.
    #[allow(unsafe_code)]
    let module = unsafe { Module::load(ctx.clone(), bytes) }.catch(ctx)?;
    let (module, evaluated) = module.eval().catch(ctx)?;
    // The prelude has no top-level await: its evaluation settles in one round of jobs.
    while ctx.execute_pending_job() {}
    evaluated.result::<Value>().transpose().catch(ctx)?;
    module.get("default").catch(ctx)
}

/// The module name of a capability's shim.
fn shim_module(name: &str) -> String {
    format!("cloudlet:capability:{name}")
}

/// Loads each shim's bytecode and hands its default export to the prelude's driver, which
/// installs what it returns (see `prelude.js`, `install`).
fn install_shims<'js>(
    ctx: &Ctx<'js>,
    driver: &Object<'js>,
    shims: &[CompiledShim],
) -> Result<(), CaughtError<'js>> {
    let install: Function = driver.get("install").catch(ctx)?;
    for shim in shims {
        // SAFETY: the bytecode was written by `Engine::with_shims` in this process, by this
        // engine.
        #[allow(unsafe_code)]
        let module = unsafe { Module::load(ctx.clone(), &shim.bytecode) }.catch(ctx)?;
        let (module, evaluated) = module.eval().catch(ctx)?;
        // A shim has no top-level await: its evaluation settles in one round of jobs.
        while ctx.execute_pending_job() {}
        evaluated.result::<Value>().transpose().catch(ctx)?;
        let factory: Function = module.get("default").catch(ctx)?;
        install
            .call::<_, ()>((shim.name.as_str(), factory))
            .catch(ctx)?;
    }
    Ok(())
}

/// How many times its source a file's compiled code may be (plus 1 MiB).
const MAX_CODE_PER_SOURCE: usize = 8;

/// Compiles `files` (ES modules by file name) to bytecode. Every file is compiled, so a syntax
/// error anywhere is reported at deploy, with its file, line and column.
pub fn compile(files: &BTreeMap<String, String>, entry: &str) -> Result<Bundle, CompileError> {
    let failure = |file: &str, message: String| CompileError {
        file: file.to_owned(),
        line: 0,
        column: 0,
        message,
    };
    if !files.contains_key(entry) {
        return Err(failure(
            entry,
            "the entry file is not among the files".into(),
        ));
    }
    let runtime = Runtime::new().map_err(|e| failure(entry, e.to_string()))?;
    runtime.set_memory_limit(256 * 1024 * 1024);
    runtime.set_max_stack_size(1024 * 1024);
    // Compiling a module compiles the files it imports too, so a missing file is reported here.
    runtime.set_loader(
        FileResolver,
        SourceLoader {
            files: files.clone(),
        },
    );
    let mut modules = BTreeMap::new();
    for (name, source) in files {
        // A context per file: each file's module is compiled once in it, on its own.
        let context = Context::full(&runtime).map_err(|e| failure(name, e.to_string()))?;
        // Without the source text: QuickJS keeps every function's own text, so a function
        // nested n deep would hold its file's text n times (a 1 MiB file became tens of MiB
        // of code). Lines and columns stay, for stacks.
        let options = WriteOptions {
            strip_source: true,
            ..WriteOptions::default()
        };
        let written = context.with(|ctx| {
            Module::declare(ctx.clone(), name.as_str(), source.as_str())
                .and_then(|module| module.write(options))
                .catch(&ctx)
                .map_err(|caught| compile_error(name, caught))
        })?;
        if written.len() > MAX_CODE_PER_SOURCE * source.len() + (1 << 20) {
            return Err(failure(
                name,
                format!(
                    "its compiled code is over {MAX_CODE_PER_SOURCE} times its source: split it up"
                ),
            ));
        }
        modules.insert(name.clone(), BASE64.encode(written));
    }
    Ok(Bundle {
        engine: engine_version(),
        entry: entry.to_owned(),
        modules,
    })
}

/// Compiles imported files from source, while compiling.
struct SourceLoader {
    files: BTreeMap<String, String>,
}

impl Loader for SourceLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let source = self
            .files
            .get(name)
            .ok_or_else(|| rquickjs::Error::new_loading_message(name, "no such file"))?;
        Module::declare(ctx.clone(), name, source.as_str())
    }
}

/// Reads the position out of a syntax error's stack (`at file:line:column`).
fn compile_error(file: &str, caught: CaughtError<'_>) -> CompileError {
    let (message, stack) = match &caught {
        CaughtError::Exception(e) => (
            e.message().unwrap_or_default(),
            e.stack().unwrap_or_default(),
        ),
        other => (other.to_string(), String::new()),
    };
    // The error may be in a file that `file` imports: the stack names it.
    let (file, line, column) = stack
        .lines()
        .find_map(|l| {
            let at = l.trim().strip_prefix("at ")?;
            let at = at
                .rsplit_once('(')
                .map_or(at, |(_, p)| p.trim_end_matches(')'));
            let mut parts = at.rsplitn(3, ':');
            let column = parts.next()?.parse().ok()?;
            let line = parts.next()?.parse().ok()?;
            Some((parts.next()?.to_owned(), line, column))
        })
        .unwrap_or_else(|| (file.to_owned(), 0, 0));
    CompileError {
        file,
        line,
        column,
        message,
    }
}

/// Called now and then, from the engine's interrupt hook, while an invocation's JavaScript has
/// been running for [`LONG_RUN`] or more (the worker gives back the calls queued behind it).
pub type LongRun = Rc<dyn Fn()>;

/// Host calls one invocation may have waiting for answers at once (`too_many_host_calls` past
/// it); together they hold at most `MAX_HOST_CALL` bytes.
pub const MAX_UNANSWERED_CALLS: usize = 16;

/// How long an invocation's JavaScript runs before [`LongRun`] is called, and how often after.
pub const LONG_RUN: Duration = Duration::from_millis(1);

/// The runtimes and bytecode of one worker.
pub struct Engine {
    bundles: HashMap<String, (Bundle, Instant)>,
    warm: HashMap<String, (Instance, Instant)>,
    max_bundles: usize,
    max_warm: usize,
    long_run: Option<LongRun>,
    shims: Rc<Vec<CompiledShim>>,
}

/// A capability's shim as module bytecode: compiled once per worker, loaded into each runtime.
struct CompiledShim {
    name: String,
    bytecode: Vec<u8>,
}

impl Engine {
    pub fn new(max_warm: usize, max_bundles: usize) -> Self {
        Engine {
            bundles: HashMap::new(),
            warm: HashMap::new(),
            max_bundles,
            max_warm,
            long_run: None,
            shims: Rc::new(Vec::new()),
        }
    }

    /// Installs `shims` (the capabilities' JavaScript) in every runtime after the prelude.
    /// Fails if one does not compile: shims are the server's code, so that is a bug to report.
    pub fn with_shims(mut self, shims: &[Shim]) -> Result<Self, String> {
        let runtime = Runtime::new().map_err(|e| e.to_string())?;
        let context = Context::full(&runtime).map_err(|e| e.to_string())?;
        let mut compiled = Vec::with_capacity(shims.len());
        for shim in shims {
            let bytecode = context.with(|ctx| {
                Module::declare(ctx.clone(), shim_module(&shim.name), shim.source.as_str())
                    .and_then(|module| module.write(WriteOptions::default()))
                    .catch(&ctx)
                    .map_err(|e| format!("the shim of {}: {e}", shim.name))
            })?;
            compiled.push(CompiledShim {
                name: shim.name.clone(),
                bytecode,
            });
        }
        self.shims = Rc::new(compiled);
        Ok(self)
    }

    /// Calls `hook` while an invocation's JavaScript runs long (see [`LongRun`]).
    pub fn on_long_run(mut self, hook: LongRun) -> Self {
        self.long_run = Some(hook);
        self
    }

    /// Whether the worker has the code of `key` (or must be sent it).
    pub fn has_code(&self, key: &str) -> bool {
        self.warm.contains_key(key) || self.bundles.contains_key(key)
    }

    /// Keeps the code of `key` for its next invocations.
    pub fn keep_bundle(&mut self, key: &str, bundle: Bundle) {
        self.remember_bundle(key, bundle);
    }

    /// Keeps a bundle, within [`MAX_BUNDLES_BYTES`] as well as the count: the least recently
    /// used go first, never the one just kept.
    fn remember_bundle(&mut self, key: &str, bundle: Bundle) {
        remember(&mut self.bundles, self.max_bundles, key, bundle);
        let mut bytes: usize = self.bundles.values().map(|(b, _)| bundle_bytes(b)).sum();
        while bytes > MAX_BUNDLES_BYTES {
            let oldest = self
                .bundles
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some((dropped, _)) = self.bundles.remove(&oldest) {
                bytes -= bundle_bytes(&dropped);
            }
        }
    }

    /// Drops runtimes and bytecode unused for `idle`.
    pub fn drop_idle(&mut self, idle: Duration) {
        let now = Instant::now();
        self.warm
            .retain(|_, (_, used)| now.duration_since(*used) < idle);
        self.bundles
            .retain(|_, (_, used)| now.duration_since(*used) < idle);
    }

    /// Runs one invocation. `None` when the code of `invocation.key` is neither warm nor sent.
    pub fn invoke(&mut self, invocation: Invocation, io: &mut dyn HostIo) -> Option<Finished> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(invocation.limits.timeout_ms);
        if let Some(bundle) = invocation.bundle.clone() {
            self.remember_bundle(&invocation.key, bundle);
        }
        let (instance, cold) = match self.warm.remove(&invocation.key) {
            Some((instance, _)) => (Ok(instance), false),
            None => {
                let (bundle, used) = self.bundles.get_mut(&invocation.key)?;
                *used = started;
                (
                    Instance::new(
                        bundle,
                        &self.shims,
                        &invocation.limits,
                        &invocation.seed,
                        deadline,
                        self.long_run.clone(),
                        io,
                    ),
                    true,
                )
            }
        };
        let (outcome, state, memory, keep) = match instance {
            Ok(instance) => {
                let outcome = instance.run(&invocation, deadline, io);
                let memory = instance.memory();
                let keep = matches!(outcome, Outcome::Ok { .. } | Outcome::Error { .. });
                let state = Rc::clone(&instance.state);
                if keep {
                    remember(&mut self.warm, self.max_warm, &invocation.key, instance);
                    self.trim_warm();
                }
                (outcome, state, memory, keep)
            }
            Err((outcome, state)) => (outcome, state, 0, false),
        };
        let _ = keep;
        let (logs, logs_dropped) = state.take_logs();
        Some(Finished {
            outcome,
            logs,
            logs_dropped,
            memory_bytes: memory,
            cold,
            micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            retire: false,
        })
    }
}

impl Engine {
    /// Drops the least recently used warm runtimes while their heaps (as last measured) add up
    /// to more than [`WARM_HEAP_BUDGET`], so that a worker's memory stays bounded however large
    /// each function may grow.
    fn trim_warm(&mut self) {
        let heap = |warm: &HashMap<String, (Instance, Instant)>| -> usize {
            warm.values().map(|(i, _)| i.state.memory.get()).sum()
        };
        while self.warm.len() > 1 && heap(&self.warm) > WARM_HEAP_BUDGET {
            let oldest = self
                .warm
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => self.warm.remove(&key),
                None => break,
            };
        }
    }
}

/// Inserts into a bounded map, evicting the least recently used entry when full.
/// The most bytes of bundles one worker keeps (bytecode in base64: a large function's is a
/// few MiB). Past it, a function's code is sent again with its next invocation.
const MAX_BUNDLES_BYTES: usize = 64 * 1024 * 1024;

/// What a bundle holds in memory, near enough.
fn bundle_bytes(bundle: &Bundle) -> usize {
    bundle.entry.len()
        + bundle
            .modules
            .iter()
            .map(|(name, code)| name.len() + code.len())
            .sum::<usize>()
}

fn remember<T>(map: &mut HashMap<String, (T, Instant)>, max: usize, key: &str, value: T) {
    if map.len() >= max.max(1) && !map.contains_key(key) {
        let oldest = map
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            map.remove(&oldest);
        }
    }
    map.insert(key.to_owned(), (value, Instant::now()));
}

/// A host call made by JavaScript, waiting to be sent.
struct OutgoingCall {
    call: u64,
    capability: String,
    /// JSON text.
    args: String,
    bytes: Vec<u8>,
}

/// What the native functions of one runtime share with its driver.
#[derive(Default)]
struct State {
    deadline: Cell<Option<Instant>>,
    interrupted: Cell<bool>,
    next_call: Cell<u64>,
    /// Host calls made and not sent yet.
    outbox: RefCell<Vec<OutgoingCall>>,
    /// Host calls made and not answered yet, with their size (arguments and bytes).
    unanswered: RefCell<HashMap<u64, usize>>,
    next_timer: Cell<u32>,
    timers: RefCell<BTreeMap<u32, Instant>>,
    logs: RefCell<Vec<LogLine>>,
    /// The bytes of `logs`' messages.
    log_bytes: Cell<usize>,
    logs_dropped: Cell<usize>,
    max_log_lines: Cell<usize>,
    random: RefCell<Drbg>,
    /// Invocations run, and the heap measured at the last sample.
    runs: Cell<u64>,
    memory: Cell<usize>,
    long_run: Option<LongRun>,
    /// While an invocation runs: its start, then when `long_run` was last called.
    since: Cell<Option<Instant>>,
    /// The runtime's clock, from when its natives are installed.
    clock: Cell<Option<FunctionClock>>,
}

/// A runtime's clock, `performance`'s: when the runtime started, in Unix microseconds by the
/// wall clock `Date.now()` reads (QuickJS's own: a function's time is real time, whatever time
/// the server's tests pretend), and a monotonic count since then in steps of 0.1 ms: fine
/// enough to time a call, coarse to make it a poor timer for side channels (a busy loop that
/// counts its turns to the next step still reads between steps, which no jitter stops yet).
#[derive(Debug, Clone, Copy)]
struct FunctionClock {
    origin_us: i64,
    started: Instant,
}

impl FunctionClock {
    fn start() -> Self {
        // The wall clock first: the count starts after it, so the clock never runs ahead.
        #[allow(clippy::disallowed_methods)]
        let origin_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let started = Instant::now();
        FunctionClock { origin_us, started }
    }

    /// Whole steps of 0.1 ms since the runtime started.
    fn elapsed_steps(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros() / 100).unwrap_or(u64::MAX)
    }

    /// Now, as the function reads it (`performance.timeOrigin + performance.now()`), in Unix
    /// microseconds.
    fn now_us(&self) -> i64 {
        let elapsed = i64::try_from(self.elapsed_steps().saturating_mul(100)).unwrap_or(i64::MAX);
        self.origin_us.saturating_add(elapsed)
    }
}

impl State {
    fn take_logs(&self) -> (Vec<LogLine>, usize) {
        self.log_bytes.set(0);
        (
            std::mem::take(&mut *self.logs.borrow_mut()),
            self.logs_dropped.replace(0),
        )
    }

    fn log(&self, level: String, mut message: String) {
        // The line's time is what the function's own clock reads at the call: a function can
        // read its logs back (with its app's key), so they tell it no finer time than it has.
        let at_us = self.clock.get().map_or(0, |clock| clock.now_us());
        if self.logs.borrow().len() >= self.max_log_lines.get() {
            self.logs_dropped.set(self.logs_dropped.get() + 1);
            return;
        }
        let room = MAX_LOG_BYTES.saturating_sub(self.log_bytes.get());
        if room == 0 {
            self.logs_dropped.set(self.logs_dropped.get() + 1);
            return;
        }
        let longest = MAX_LOG_LINE.min(room);
        if message.len() > longest {
            let mut end = longest;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        self.log_bytes.set(self.log_bytes.get() + message.len());
        self.logs.borrow_mut().push(LogLine {
            level,
            message,
            at_us,
        });
    }
}

/// `crypto.getRandomValues`: SHA-256 in counter mode over the invocation's seed.
#[derive(Default)]
struct Drbg {
    seed: [u8; 32],
    counter: u64,
}

impl Drbg {
    /// The stream a module's load draws from, apart from its invocation's own.
    fn for_module_load(invocation_seed: &[u8; 32]) -> Drbg {
        let seed = Sha256::new()
            .chain_update(b"cloudlet: module load")
            .chain_update(invocation_seed)
            .finalize();
        Drbg {
            seed: seed.into(),
            counter: 0,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_le_bytes())
                .finalize();
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

/// A warm runtime of one function version.
struct Instance {
    // Field order is drop order: the persistent values before their context and runtime.
    driver: Persistent<Object<'static>>,
    handler: Persistent<Function<'static>>,
    context: Context,
    runtime: Runtime,
    state: Rc<State>,
}

type Failed = (Outcome, Rc<State>);

impl Instance {
    fn new(
        bundle: &Bundle,
        shims: &[CompiledShim],
        limits: &Limits,
        seed: &[u8; 32],
        deadline: Instant,
        long_run: Option<LongRun>,
        io: &mut dyn HostIo,
    ) -> Result<Self, Failed> {
        let state = Rc::new(State {
            long_run,
            // The module's own code counts as running, like the call it is made for.
            since: Cell::new(Some(Instant::now())),
            // The module's own code draws from a stream of its own, seeded by the invocation
            // that loads it: a value made at load (a key, an id) is neither the same on every
            // cold start nor the first value the invocation itself draws.
            random: RefCell::new(Drbg::for_module_load(seed)),
            ..State::default()
        });
        state.max_log_lines.set(limits.max_log_lines);
        state.deadline.set(Some(deadline));
        let fail = |message: String, state: &Rc<State>| {
            (
                Outcome::Error {
                    message,
                    stack: String::new(),
                },
                Rc::clone(state),
            )
        };
        if bundle.engine != engine_version() {
            return Err(fail(
                format!("compiled by {}; deploy the function again", bundle.engine),
                &state,
            ));
        }
        let runtime = Runtime::new().map_err(|e| fail(e.to_string(), &state))?;
        runtime.set_memory_limit(limits.memory_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        let watch = Rc::clone(&state);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let now = Instant::now();
            let over = watch.deadline.get().is_some_and(|d| now >= d);
            if over {
                watch.interrupted.set(true);
            } else if let (Some(hook), Some(since)) = (&watch.long_run, watch.since.get())
                && now >= since + LONG_RUN
            {
                watch.since.set(Some(now));
                hook();
            }
            over
        })));
        let mut modules = HashMap::new();
        for (name, code) in &bundle.modules {
            let bytes = BASE64
                .decode(code)
                .map_err(|e| fail(format!("{name}: {e}"), &state))?;
            modules.insert(name.clone(), bytes);
        }
        runtime.set_loader(FileResolver, BytecodeLoader { modules });
        let context = Context::full(&runtime).map_err(|e| fail(e.to_string(), &state))?;
        let entry = bundle.entry.clone();
        let built = context.with(|ctx| -> Result<_, Outcome> {
            install_natives(&ctx, &state).map_err(|e| error_outcome(&ctx, e, &state))?;
            let driver = load_prelude(&ctx).map_err(|e| caught_outcome(e, &state))?;
            install_shims(&ctx, &driver, shims).map_err(|e| caught_outcome(e, &state))?;
            let import = Module::import(&ctx, entry.as_str())
                .catch(&ctx)
                .map_err(|e| caught_outcome(e, &state))?;
            let namespace: Object = settle(&ctx, &driver, &state, &import, deadline, io)?;
            let handler: Function = namespace.get("default").map_err(|_| Outcome::Error {
                message: format!("{entry} has no default export: export default async function (event, ctx) {{ … }}"),
                stack: String::new(),
            })?;
            Ok((Persistent::save(&ctx, driver), Persistent::save(&ctx, handler)))
        });
        match built {
            Ok((driver, handler)) => Ok(Instance {
                driver,
                handler,
                context,
                runtime,
                state,
            }),
            Err(outcome) => Err((outcome, state)),
        }
    }

    fn run(&self, invocation: &Invocation, deadline: Instant, io: &mut dyn HostIo) -> Outcome {
        let state = &self.state;
        state.deadline.set(Some(deadline));
        state.since.set(Some(Instant::now()));
        state.interrupted.set(false);
        state.max_log_lines.set(invocation.limits.max_log_lines);
        *state.random.borrow_mut() = Drbg {
            seed: invocation.seed,
            counter: 0,
        };
        self.runtime
            .set_memory_limit(invocation.limits.memory_bytes);
        let outcome = self.context.with(|ctx| -> Result<String, Outcome> {
            let driver = self
                .driver
                .clone()
                .restore(&ctx)
                .map_err(|e| error_outcome(&ctx, e, state))?;
            let handler = self
                .handler
                .clone()
                .restore(&ctx)
                .map_err(|e| error_outcome(&ctx, e, state))?;
            let run: Function = driver
                .get("run")
                .map_err(|e| error_outcome(&ctx, e, state))?;
            let promise: Promise = run
                .call((handler, invocation.event.get(), invocation.context.get()))
                .catch(&ctx)
                .map_err(|e| caught_outcome(e, state))?;
            settle(&ctx, &driver, state, &promise, deadline, io)
        });
        state.deadline.set(None);
        state.since.set(None);
        // Nothing an invocation left behind reaches the next one: host calls it did not await
        // (they would be answered for the next caller) and its timers.
        state.timers.borrow_mut().clear();
        state.outbox.borrow_mut().clear();
        state.unanswered.borrow_mut().clear();
        match outcome {
            Ok(json) if json.len() > invocation.limits.max_result_bytes => {
                Outcome::ResultTooLarge { bytes: json.len() }
            }
            Ok(json) => match RawValue::from_string(json) {
                Ok(json) => Outcome::Ok { json },
                Err(e) => Outcome::Error {
                    message: format!("the result is not JSON: {e}"),
                    stack: String::new(),
                },
            },
            Err(outcome) => outcome,
        }
    }

    /// The runtime's heap in use. Measuring walks the whole heap (a twentieth of a warm
    /// invocation's cost), so it is measured on the first invocation and every
    /// [`MEMORY_SAMPLE_EVERY`]th after it, and the last measure answers in between.
    fn memory(&self) -> usize {
        let runs = self.state.runs.get();
        self.state.runs.set(runs + 1);
        if runs.is_multiple_of(MEMORY_SAMPLE_EVERY) {
            let used = self.runtime.memory_usage().memory_used_size;
            self.state.memory.set(usize::try_from(used).unwrap_or(0));
        }
        self.state.memory.get()
    }
}

/// Drives the runtime until `promise` settles: runs its jobs, sends host calls, waits for their
/// replies and for timers, all before `deadline`.
fn settle<'js, T: rquickjs::FromJs<'js>>(
    ctx: &Ctx<'js>,
    driver: &Object<'js>,
    state: &Rc<State>,
    promise: &Promise<'js>,
    deadline: Instant,
    io: &mut dyn HostIo,
) -> Result<T, Outcome> {
    let driver_call = |name: &str| -> Result<Function<'js>, Outcome> {
        driver.get(name).map_err(|e| error_outcome(ctx, e, state))
    };
    let mut outstanding = 0usize;
    loop {
        while ctx.execute_pending_job() {}
        if state.interrupted.get() {
            return Err(Outcome::Timeout);
        }
        match promise.state() {
            PromiseState::Resolved => {
                return promise
                    .result::<T>()
                    .unwrap_or(Err(rquickjs::Error::Unknown))
                    .catch(ctx)
                    .map_err(|e| caught_outcome(e, state));
            }
            PromiseState::Rejected => {
                let error = promise
                    .result::<Value>()
                    .unwrap_or(Err(rquickjs::Error::Unknown))
                    .catch(ctx)
                    .err()
                    .map(|e| caught_outcome(e, state));
                return Err(error.unwrap_or(Outcome::Error {
                    message: "the function failed".into(),
                    stack: String::new(),
                }));
            }
            PromiseState::Pending => {}
        }
        for outgoing in state.outbox.borrow_mut().drain(..) {
            let args = serde_json::from_str(&outgoing.args).unwrap_or(serde_json::Value::Null);
            io.call(outgoing.call, &outgoing.capability, args, outgoing.bytes);
            outstanding += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Outcome::Timeout);
        }
        let due = state
            .timers
            .borrow()
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect::<Vec<_>>();
        if !due.is_empty() {
            let fire = driver_call("fire")?;
            for id in due {
                state.timers.borrow_mut().remove(&id);
                fire.call::<_, ()>((id,))
                    .catch(ctx)
                    .map_err(|e| caught_outcome(e, state))?;
            }
            continue;
        }
        let next_timer = state.timers.borrow().values().min().copied();
        if outstanding == 0 && next_timer.is_none() {
            // Nothing can settle it any more: it would only time out.
            return Err(Outcome::Timeout);
        }
        let until = next_timer.map_or(deadline, |t| t.min(deadline));
        if outstanding > 0 {
            if let Some((call, outcome, bytes)) = io.reply(until) {
                outstanding = outstanding.saturating_sub(1);
                state.unanswered.borrow_mut().remove(&call);
                let (ok, json) = match outcome {
                    HostOutcome::Ok { value } => (true, value.to_string()),
                    HostOutcome::Error { code, message } => (
                        false,
                        serde_json::json!({ "code": code, "message": message }).to_string(),
                    ),
                };
                let bytes = if bytes.is_empty() {
                    None
                } else {
                    Some(
                        rquickjs::TypedArray::<u8>::new(ctx.clone(), bytes)
                            .map_err(|e| error_outcome(ctx, e, state))?,
                    )
                };
                driver_call("settle")?
                    .call::<_, ()>((call, ok, json, bytes))
                    .catch(ctx)
                    .map_err(|e| caught_outcome(e, state))?;
            }
        } else {
            io.pause(until);
        }
    }
}

/// The native functions the prelude builds on, under `globalThis.__cloudlet`.
fn install_natives<'js>(ctx: &Ctx<'js>, state: &Rc<State>) -> rquickjs::Result<()> {
    let natives = Object::new(ctx.clone())?;
    let s = Rc::clone(state);
    natives.set(
        "call",
        Function::new(
            ctx.clone(),
            move |capability: String,
                  args: String,
                  bytes: rquickjs::function::Opt<rquickjs::TypedArray<'js, u8>>|
                  -> f64 {
                // SAFETY: the bytes are copied out before any JavaScript runs again.
                #[allow(unsafe_code)]
                let bytes = bytes
                    .0
                    .and_then(|array| unsafe { array.as_bytes() }.map(<[u8]>::to_vec))
                    .unwrap_or_default();
                let size = args.len() + bytes.len();
                if size > MAX_HOST_CALL {
                    // The prelude rejects the call with `host_call_too_large`.
                    return -1.0;
                }
                let mut unanswered = s.unanswered.borrow_mut();
                let held: usize = unanswered.values().sum();
                if unanswered.len() >= MAX_UNANSWERED_CALLS || held + size > MAX_HOST_CALL {
                    // With `too_many_host_calls`: what waits for answers is bounded, in number
                    // and in bytes, outside the runtime's own memory limit.
                    return -2.0;
                }
                let call = s.next_call.get() + 1;
                s.next_call.set(call);
                unanswered.insert(call, size);
                s.outbox.borrow_mut().push(OutgoingCall {
                    call,
                    capability,
                    args,
                    bytes,
                });
                call as f64
            },
        )?,
    )?;
    let s = Rc::clone(state);
    natives.set(
        "log",
        Function::new(ctx.clone(), move |level: String, message: String| {
            s.log(level, message)
        })?,
    )?;
    let s = Rc::clone(state);
    natives.set(
        "timer",
        Function::new(ctx.clone(), move |ms: f64| {
            let id = s.next_timer.get() + 1;
            s.next_timer.set(id);
            // The prelude passes `Math.max(0, …)`, but the guest may have replaced `Math.max`:
            // whatever arrives (NaN too) is a delay, never a panic.
            let delay = Duration::try_from_secs_f64((ms / 1000.0).clamp(0.0, 86_400.0))
                .unwrap_or(Duration::ZERO);
            s.timers.borrow_mut().insert(id, Instant::now() + delay);
            id
        })?,
    )?;
    let s = Rc::clone(state);
    natives.set(
        "cancel",
        Function::new(ctx.clone(), move |id: u32| {
            s.timers.borrow_mut().remove(&id);
        })?,
    )?;
    let s = Rc::clone(state);
    natives.set(
        "random",
        Function::new(ctx.clone(), move |n: usize| {
            let mut bytes = vec![0u8; n.min(65536)];
            s.random.borrow_mut().fill(&mut bytes);
            bytes
        })?,
    )?;
    // `performance`: the function's clock (see `FunctionClock`), which its console lines'
    // times read too.
    let clock = FunctionClock::start();
    state.clock.set(Some(clock));
    natives.set("origin", clock.origin_us as f64 / 1000.0)?;
    natives.set(
        "elapsed",
        Function::new(ctx.clone(), move || -> f64 {
            clock.elapsed_steps() as f64 / 10.0
        })?,
    )?;
    ctx.globals().set("__cloudlet", natives)?;
    Ok(())
}

fn error_outcome(ctx: &Ctx<'_>, error: rquickjs::Error, state: &State) -> Outcome {
    caught_outcome(CaughtError::from_error(ctx, error), state)
}

/// The most of a thrown error's message and stack kept (the message goes to the caller).
const MAX_ERROR_TEXT: usize = 8 * 1024;

fn truncated(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn caught_outcome(caught: CaughtError<'_>, state: &State) -> Outcome {
    if state.interrupted.get() {
        return Outcome::Timeout;
    }
    let (message, stack) = match &caught {
        CaughtError::Exception(e) => (
            e.message().unwrap_or_default(),
            e.stack().unwrap_or_default(),
        ),
        CaughtError::Value(v) => (
            v.as_string()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| format!("{v:?}")),
            String::new(),
        ),
        CaughtError::Error(e) => (e.to_string(), String::new()),
    };
    // QuickJS throws null when it can not even make the error object of running out of memory;
    // a function that throws null itself is taken for the same (there is no telling them apart
    // once the stack has unwound and freed what filled the heap).
    let thrown_null = matches!(&caught, CaughtError::Value(v) if v.is_null());
    if message == "out of memory"
        || thrown_null
        || matches!(caught, CaughtError::Error(rquickjs::Error::Allocation))
    {
        return Outcome::MemoryLimit;
    }
    Outcome::Error {
        message: truncated(message),
        stack: truncated(stack),
    }
}

/// Resolves imports among the function's own files: `./lib.js` from `dir/index.js` is
/// `dir/lib.js`. Packages (bare names) are not available.
struct FileResolver;

impl Resolver for FileResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if !(name.starts_with("./") || name.starts_with("../")) {
            if base.is_empty() || base == "<eval>" {
                return Ok(name.to_owned());
            }
            return Err(rquickjs::Error::new_resolving_message(
                base,
                name,
                "only relative imports of the function's own files",
            ));
        }
        let mut parts: Vec<&str> = base.split('/').collect();
        parts.pop();
        for part in name.split('/') {
            match part {
                "." | "" => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(rquickjs::Error::new_resolving_message(
                            base,
                            name,
                            "outside the function's files",
                        ));
                    }
                }
                part => parts.push(part),
            }
        }
        let resolved = parts.join("/");
        // The engine's own modules (the prelude, the capabilities' shims) are named with a
        // colon, which no function file has: `./cloudlet:prelude` must not reach them.
        if resolved.contains(':') {
            return Err(rquickjs::Error::new_resolving_message(
                base,
                name,
                "only the function's own files",
            ));
        }
        Ok(resolved)
    }
}

struct BytecodeLoader {
    modules: HashMap<String, Vec<u8>>,
}

impl Loader for BytecodeLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let bytes = self
            .modules
            .get(name)
            .ok_or_else(|| rquickjs::Error::new_loading_message(name, "no such file"))?;
        // SAFETY: the bytecode was written by `compile` with this engine version (checked in
        // `Instance::new`) and stored by the server; it is never taken from a client.
        #[allow(unsafe_code)]
        unsafe {
            Module::load(ctx.clone(), bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every host call with its arguments under `echo` and its bytes reversed;
    /// records what was called.
    #[derive(Default)]
    struct Replies {
        calls: Vec<(String, serde_json::Value, Vec<u8>)>,
        queued: std::collections::VecDeque<HostAnswer>,
    }

    impl HostIo for Replies {
        fn call(&mut self, call: u64, capability: &str, args: serde_json::Value, bytes: Vec<u8>) {
            self.calls
                .push((capability.to_owned(), args.clone(), bytes.clone()));
            let value = serde_json::json!({ "echo": args });
            let reversed = bytes.into_iter().rev().collect();
            self.queued
                .push_back((call, HostOutcome::Ok { value }, reversed));
        }
        fn reply(&mut self, _until: Instant) -> Option<HostAnswer> {
            self.queued.pop_front()
        }
    }

    /// A capability for the tests: `ctx.echo.send(args, bytes)` and a global `echoed(args)`.
    const ECHO_SHIM: &str = "export default (host) => ({
        ctx: { echo: Object.freeze({ send: (args, bytes) => host.call(args, bytes) }) },
        global: { echoed: async (args) => (await host.call(args)).value },
    });";

    fn raw(value: serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    fn limits() -> Limits {
        Limits {
            memory_bytes: 16 * 1024 * 1024,
            stack_bytes: 256 * 1024,
            timeout_ms: 1000,
            max_result_bytes: 1024 * 1024,
            max_log_lines: 10,
        }
    }

    fn run(files: &[(&str, &str)], event: serde_json::Value) -> (Finished, Replies) {
        run_with(files, event, limits())
    }

    fn run_with(
        files: &[(&str, &str)],
        event: serde_json::Value,
        limits: Limits,
    ) -> (Finished, Replies) {
        let files = files
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect();
        let bundle = compile(&files, "index.js").unwrap();
        let shim = Shim {
            name: "echo".into(),
            source: ECHO_SHIM.into(),
        };
        let mut engine = Engine::new(4, 4).with_shims(&[shim]).unwrap();
        let mut io = Replies::default();
        let invocation = Invocation {
            id: 1,
            key: "k".into(),
            bundle: Some(bundle),
            event: raw(event),
            context: raw(serde_json::json!({ "auth": { "id": "u1" } })),
            limits,
            seed: [7; 32],
        };
        let finished = engine.invoke(invocation, &mut io).unwrap();
        (finished, io)
    }

    fn ok(finished: &Finished) -> serde_json::Value {
        match &finished.outcome {
            Outcome::Ok { json } => serde_json::from_str(json.get()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// Functions nested deep keep their lines for stacks, not their text: the code stays about
    /// the size of its source.
    #[test]
    fn compiled_code_keeps_no_copy_of_the_source_per_nested_function() {
        let padding = format!("/* {} */", "x".repeat(20_000));
        let mut source = String::from("export default ");
        for _ in 0..20 {
            source.push_str(&format!("() => {{ {padding}\n return "));
        }
        source.push('1');
        for _ in 0..20 {
            source.push_str(" }");
        }
        let files = BTreeMap::from([("index.js".to_owned(), source.clone())]);
        let bundle = compile(&files, "index.js").unwrap();
        let code = BASE64.decode(&bundle.modules["index.js"]).unwrap();
        assert!(
            code.len() < source.len() / 4,
            "{} bytes of code for {} of source",
            code.len(),
            source.len()
        );
        let thrown = "export default () => { null.x }";
        let (finished, _) = run(&[("index.js", thrown)], serde_json::json!({}));
        assert!(
            format!("{:?}", finished.outcome).contains("index.js:1"),
            "{:?}",
            finished.outcome
        );
    }

    #[test]
    fn a_function_gets_its_event_and_context_and_its_result_is_json() {
        let source = "export default async function (event, ctx) {
            console.log('hello', { n: event.n });
            return { doubled: event.n * 2, user: ctx.auth.id };
        }";
        let (finished, _) = run(&[("index.js", source)], serde_json::json!({ "n": 21 }));
        assert_eq!(
            ok(&finished),
            serde_json::json!({ "doubled": 42, "user": "u1" })
        );
        assert_eq!(finished.logs.len(), 1);
        assert_eq!(finished.logs[0].message, r#"hello {"n":21}"#);
        assert!(finished.cold);
    }

    #[test]
    // The lines' times are wall-clock times, read here to bound them.
    #[allow(clippy::disallowed_methods)]
    fn each_console_line_has_the_time_of_the_functions_clock() {
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64
        };
        // The function's clock as it reads it around the first line.
        let source = "export default async () => {
            const before = performance.now();
            console.log('first');
            const after = performance.now();
            const from = Date.now();
            while (Date.now() - from < 5) {}
            console.log('second');
            return [performance.timeOrigin, before, after];
        }";
        let started = wall();
        let (finished, _) = run(&[("index.js", source)], serde_json::Value::Null);
        let ended = wall();
        let at: Vec<i64> = finished.logs.iter().map(|l| l.at_us).collect();
        assert_eq!(at.len(), 2, "{:?}", finished.logs);
        let read: Vec<f64> = serde_json::from_value(ok(&finished)).unwrap();
        // The line's time is what the clock read: its origin (to the microsecond, give or take
        // one for the float) and a whole number of 0.1 ms steps, between the readings around
        // the line; and real time.
        let origin = (read[0] * 1000.0).round() as i64;
        let steps = (read[1] * 10.0).round() as i64..=(read[2] * 10.0).round() as i64;
        assert!(
            steps
                .clone()
                .any(|step| (at[0] - (origin + step * 100)).abs() <= 1),
            "{read:?} {steps:?} {at:?}"
        );
        assert!(
            started <= at[0] && at[1] <= ended,
            "{started} {at:?} {ended}"
        );
        // Five milliseconds of waiting apart (`Date.now()` counts whole milliseconds, so the
        // wait is at least four), in steps of 0.1 ms.
        assert!(at[1] - at[0] >= 4_000, "{at:?}");
        assert_eq!((at[1] - at[0]) % 100, 0, "{at:?}");
    }

    #[test]
    fn console_lines_are_bounded_in_bytes_as_well_as_in_number() {
        let source = "export default async () => {
            for (let i = 0; i < 10; i++) console.log(String(i).repeat(20000));
            return 1;
        }";
        let limits = Limits {
            max_log_lines: 100,
            ..limits()
        };
        let (finished, _) = run_with(&[("index.js", source)], serde_json::Value::Null, limits);
        let bytes: usize = finished.logs.iter().map(|l| l.message.len()).sum();
        assert!(bytes <= MAX_LOG_BYTES + '…'.len_utf8(), "{bytes}");
        assert_eq!(
            finished.logs.len(),
            4,
            "three whole lines and the rest of the budget"
        );
        assert!(finished.logs.iter().all(|l| l.message.ends_with('…')));
        assert_eq!(finished.logs_dropped, 6);
    }

    #[test]
    fn modules_import_each_other_and_a_syntax_error_has_its_position() {
        let files = [
            (
                "index.js",
                "import { twice } from './lib/math.js';\nexport default async () => twice(4);",
            ),
            ("lib/math.js", "export const twice = (n) => n * 2;"),
        ];
        let (finished, _) = run(&files, serde_json::Value::Null);
        assert_eq!(ok(&finished), serde_json::json!(8));

        let broken: BTreeMap<String, String> = [
            ("index.js".to_owned(), "export default 1;".to_owned()),
            ("lib.js".to_owned(), "const a = 1;\nlet = = 2;\n".to_owned()),
        ]
        .into();
        let error = compile(&broken, "index.js").unwrap_err();
        assert_eq!(
            (error.file.as_str(), error.line),
            ("lib.js", 2),
            "{error:?}"
        );
        assert!(error.column > 0, "{error:?}");
    }

    #[test]
    fn capabilities_installed_by_shims_carry_json_and_bytes_both_ways() {
        let source = "export default async (event, ctx) => {
            const { value, bytes } = await ctx.echo.send({ a: 1 }, new Uint8Array([1, 2, 255]));
            const global = await echoed({ b: 2 });
            const empty = await ctx.echo.send({ c: 3 });
            const many = [];
            for (let i = 0; i < 17; i++) many.push(ctx.echo.send({ i }).then(() => 'ok', (e) => e.code));
            const waiting = await Promise.all(many);
            let tooLarge = null;
            try {
                await ctx.echo.send({}, new Uint8Array(17 * 1024 * 1024));
            } catch (e) {
                tooLarge = e.code;
            }
            return { value, bytes: [...bytes], global, empty: empty.bytes, tooLarge, tooMany: waiting[16],
                     answered: waiting.filter((w) => w === 'ok').length,
                     response: [...await new Response(bytes).bytes()], text: await new Response(new Uint8Array([104, 105])).text() };
        }";
        let big = Limits {
            memory_bytes: 64 * 1024 * 1024,
            ..limits()
        };
        let (finished, io) = run_with(&[("index.js", source)], serde_json::Value::Null, big);
        assert_eq!(
            ok(&finished),
            serde_json::json!({
                "value": { "echo": { "a": 1 } },
                "bytes": [255, 2, 1],
                "global": { "echo": { "b": 2 } },
                "empty": null,
                "tooLarge": "host_call_too_large",
                "tooMany": "too_many_host_calls",
                "answered": 16,
                "response": [255, 2, 1],
                "text": "hi"
            })
        );
        // The too-large call and the seventeenth waiting one never left the runtime.
        assert_eq!(io.calls.len(), 3 + 16);
        assert_eq!(io.calls[0].0, "echo");
        assert_eq!(io.calls[0].2, [1, 2, 255]);
    }

    #[test]
    fn a_shim_that_does_not_compile_is_refused() {
        let broken = Shim {
            name: "broken".into(),
            source: "export default (host) => {".into(),
        };
        let error = Engine::new(1, 1).with_shims(&[broken]).err().unwrap();
        assert!(error.contains("broken"), "{error}");
    }

    #[test]
    fn web_basics_work() {
        let source = "export default async () => {
            const bytes = new TextEncoder().encode('héllo €𝄞');
            const back = new TextDecoder().decode(bytes);
            const url = new URL('https://user@Example.com:443/a/b?x=1&y=two+words#h');
            url.searchParams.set('z', 'a&b');
            const uuid = crypto.randomUUID();
            const before = performance.now();
            await new Promise((resolve) => setTimeout(resolve, 5));
            const waited = performance.now() - before;
            const origin = Math.abs(performance.timeOrigin + performance.now() - Date.now()) < 50;
            const tenths = Math.abs(before * 10 - Math.round(before * 10)) < 1e-9;
            return { timed: waited >= 4.9 && waited < 1000 && origin && tenths, n: bytes.length, back, b64: btoa('hi!?'), un: atob('aGkhPw=='),
                     href: url.href, y: url.searchParams.get('y'), host: url.host,
                     uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid) };
        }";
        let (finished, _) = run(&[("index.js", source)], serde_json::Value::Null);
        assert_eq!(
            ok(&finished),
            serde_json::json!({
                "n": 14, "back": "héllo €𝄞", "b64": "aGkhPw==", "un": "hi!?",
                "href": "https://user@example.com/a/b?x=1&y=two+words&z=a%26b#h",
                "y": "two words", "host": "example.com", "uuid": true, "timed": true
            })
        );
    }

    #[test]
    fn a_worker_keeps_bundles_within_their_bytes_the_newest_first() {
        let mut engine = Engine::new(1, 256);
        let big = |n: usize| Bundle {
            engine: "test".into(),
            entry: "index.js".into(),
            modules: [("index.js".to_owned(), n.to_string().repeat(9 * 1024 * 1024))].into(),
        };
        for n in 0..10 {
            engine.keep_bundle(&format!("k{n}"), big(n));
            let bytes: usize = engine.bundles.values().map(|(b, _)| bundle_bytes(b)).sum();
            assert!(bytes <= MAX_BUNDLES_BYTES, "{bytes}");
            assert!(engine.has_code(&format!("k{n}")), "the newest is kept");
        }
        assert!(!engine.has_code("k0"), "the oldest went first");
        assert_eq!(engine.bundles.len(), MAX_BUNDLES_BYTES / (9 * 1024 * 1024));
        // One bundle over the bytes on its own is still kept: it is the one about to run.
        let huge = Bundle {
            modules: [("index.js".to_owned(), "h".repeat(MAX_BUNDLES_BYTES + 1))].into(),
            ..big(0)
        };
        engine.keep_bundle("huge", huge);
        assert!(engine.has_code("huge"));
        assert_eq!(engine.bundles.len(), 1);
    }

    #[test]
    fn timers_take_whatever_delay_a_guest_makes_without_a_panic() {
        // The prelude's `Math.max` is the guest's: NaN once reached the native and panicked.
        let source = "export default async () => {
            Math.max = () => NaN;
            await new Promise((resolve) => setTimeout(resolve, 0));
            Math.max = () => -Infinity;
            await new Promise((resolve) => setTimeout(resolve, 0));
            return 'done';
        }";
        let (finished, _) = run(&[("index.js", source)], serde_json::Value::Null);
        assert_eq!(ok(&finished), serde_json::json!("done"));
    }

    #[test]
    fn values_drawn_at_load_come_from_the_loading_invocations_seed() {
        let source = "const atLoad = crypto.randomUUID();
            export default async () => ({ atLoad, inRun: crypto.randomUUID() });";
        let files = [("index.js".to_owned(), source.to_owned())].into();
        let bundle = compile(&files, "index.js").unwrap();
        let invoke = |engine: &mut Engine, seed: u8, bundle: Option<Bundle>| {
            let invocation = Invocation {
                id: 1,
                key: "k".into(),
                bundle,
                event: raw(serde_json::Value::Null),
                context: raw(serde_json::json!({})),
                limits: limits(),
                seed: [seed; 32],
            };
            let finished = engine.invoke(invocation, &mut Replies::default()).unwrap();
            let value = ok(&finished);
            (value["atLoad"].clone(), value["inRun"].clone())
        };
        let (first_load, first_run) = invoke(&mut Engine::new(4, 4), 1, Some(bundle.clone()));
        let (other_load, _) = invoke(&mut Engine::new(4, 4), 2, Some(bundle.clone()));
        assert_ne!(first_load, other_load, "two cold starts draw apart");
        assert_ne!(first_load, first_run, "the load's stream is not the call's");
        let mut engine = Engine::new(4, 4);
        let (cold_load, _) = invoke(&mut engine, 1, Some(bundle));
        let (warm_load, warm_run) = invoke(&mut engine, 3, None);
        assert_eq!(
            (cold_load.clone(), warm_load),
            (first_load, cold_load),
            "module state stays"
        );
        assert_ne!(warm_run, first_run, "each call draws from its own seed");
    }

    #[test]
    fn the_engines_own_modules_can_not_be_imported() {
        for name in [
            "./cloudlet:prelude",
            "./cloudlet:capability:echo",
            "./a/../cloudlet:prelude",
        ] {
            let source = format!(
                "export default async () => {{
                    try {{ await import('{name}'); return 'imported'; }}
                    catch (e) {{ return 'refused'; }}
                }}"
            );
            let (finished, _) = run(&[("index.js", &source)], serde_json::Value::Null);
            assert_eq!(ok(&finished), serde_json::json!("refused"), "{name}");
        }
    }

    #[test]
    fn runaway_code_ends_with_its_outcome() {
        let cases = [
            ("export default async () => { for (;;) {} }", "timeout"),
            (
                "export default async () => new Promise(() => {})",
                "timeout",
            ),
            (
                "export default async () => { const a = []; for (;;) a.push('x'.repeat(1000)); }",
                "memory",
            ),
            (
                "const f = (n) => f(n + 1) + 1; export default async () => f(0);",
                "error",
            ),
            (
                "export default async () => { throw new Error('nope'); }",
                "error",
            ),
            (
                "export default async () => 'x'.repeat(2 * 1024 * 1024)",
                "too large",
            ),
        ];
        for (source, expected) in cases {
            let (finished, _) = run(&[("index.js", source)], serde_json::Value::Null);
            let got = match &finished.outcome {
                Outcome::Timeout => "timeout",
                Outcome::MemoryLimit => "memory",
                Outcome::Error { .. } => "error",
                Outcome::ResultTooLarge { .. } => "too large",
                Outcome::Ok { .. } => "ok",
            };
            assert_eq!(got, expected, "{source}: {:?}", finished.outcome);
        }
    }

    #[test]
    fn a_warm_runtime_serves_the_next_call_and_a_timed_out_one_is_dropped() {
        let source = "let calls = 0; export default async (e) => { calls += 1; if (e.spin) for(;;){} return calls; }";
        let files = [("index.js".to_owned(), source.to_owned())].into();
        let bundle = compile(&files, "index.js").unwrap();
        let mut engine = Engine::new(4, 4);
        let mut invoke = |event: serde_json::Value, bundle: Option<Bundle>| {
            let invocation = Invocation {
                id: 1,
                key: "k".into(),
                bundle,
                event: raw(event),
                context: raw(serde_json::json!({})),
                limits: Limits {
                    timeout_ms: 100,
                    ..limits()
                },
                seed: [0; 32],
            };
            engine.invoke(invocation, &mut Replies::default()).unwrap()
        };
        let first = invoke(serde_json::json!({}), Some(bundle));
        let second = invoke(serde_json::json!({}), None);
        assert_eq!((ok(&first), first.cold), (serde_json::json!(1), true));
        assert_eq!((ok(&second), second.cold), (serde_json::json!(2), false));
        assert_eq!(
            invoke(serde_json::json!({ "spin": true }), None).outcome,
            Outcome::Timeout
        );
        let fresh = invoke(serde_json::json!({}), None);
        assert_eq!((ok(&fresh), fresh.cold), (serde_json::json!(1), true));
    }
}
