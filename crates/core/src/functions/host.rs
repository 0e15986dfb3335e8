//! What a running function may ask of the server: capabilities (`ctx.db`, `fetch`, and the ones
//! to come: `ctx.files`, `ctx.queue`, `ctx.realtime`, `ctx.pay`).
//!
//! A capability is one type that implements [`Capability`]: its name, its JavaScript shim (what
//! it adds to `ctx` and the globals, in the form `cloudlet-js`'s prelude installs), the typed
//! request its calls carry, and how it answers one. The composition root registers every
//! capability once, in [`Capabilities`]; from there the server sends the shims to the workers and
//! answers the calls. The engine knows no capability, and no capability knows the engine.
//!
//! A call carries JSON arguments and bytes (as they are: a fetched image is never text on the
//! way) and is answered with a JSON value and bytes, or with a failure whose `code` is one of the
//! API's stable codes. Each side is bounded by [`MAX_HOST_CALL`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cloudlet_store::AppName;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::access::Caller;

/// The largest call or answer, its JSON and its bytes together.
pub const MAX_HOST_CALL: usize = 16 * 1024 * 1024;

/// A host call that failed: a stable code (one of the API's) and a message for the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    pub code: String,
    pub message: String,
}

impl HostFailure {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        HostFailure {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// An answer: JSON for the function, and bytes beside it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostReply {
    pub value: Json,
    pub bytes: Vec<u8>,
}

impl HostReply {
    pub fn json(value: Json) -> Self {
        HostReply {
            value,
            bytes: Vec::new(),
        }
    }
}

/// On whose behalf a call is made: the invocation's app and caller.
#[derive(Debug, Clone)]
pub struct CallScope {
    pub app: AppName,
    pub caller: Caller,
    pub request_id: String,
}

/// One thing a function can reach outside its runtime.
#[async_trait]
pub trait Capability: Send + Sync + 'static {
    /// What a call of it says: its arguments, read from the JSON the shim sent.
    type Request: DeserializeOwned + Send;

    /// Its host-call name (and, by convention, where its shim puts it: `ctx.db`, `fetch`).
    fn name(&self) -> &'static str;

    /// Its JavaScript: a module whose default export takes the capability's side of the bridge
    /// (`host.call(args, bytes)`) and returns `{ ctx, global }`, what it adds to `ctx` and to the
    /// globals.
    fn shim(&self) -> &'static str;

    async fn call(
        &self,
        scope: &CallScope,
        request: Self::Request,
        bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure>;
}

/// A capability with its request type erased, so that all of them fit in one registry.
#[async_trait]
trait AnyCapability: Send + Sync {
    fn shim(&self) -> &'static str;
    async fn call(
        &self,
        scope: &CallScope,
        args: Json,
        bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure>;
}

#[async_trait]
impl<C: Capability> AnyCapability for C {
    fn shim(&self) -> &'static str {
        Capability::shim(self)
    }

    async fn call(
        &self,
        scope: &CallScope,
        args: Json,
        bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let request = serde_json::from_value(args).map_err(|e| {
            HostFailure::new(
                "invalid_host_call",
                format!("{} does not take that: {e}", self.name()),
            )
        })?;
        Capability::call(self, scope, request, bytes).await
    }
}

/// Every capability of the instance, by name: registered once, at start.
#[derive(Clone, Default)]
pub struct Capabilities {
    by_name: BTreeMap<&'static str, Arc<dyn AnyCapability>>,
}

impl Capabilities {
    pub fn new() -> Self {
        Capabilities::default()
    }

    /// Registers `capability`. A second one of the same name replaces the first.
    pub fn with(mut self, capability: impl Capability) -> Self {
        self.by_name.insert(capability.name(), Arc::new(capability));
        self
    }

    /// Every capability's name and JavaScript, for the workers.
    pub fn shims(&self) -> Vec<(&'static str, &'static str)> {
        self.by_name
            .iter()
            .map(|(name, capability)| (*name, capability.shim()))
            .collect()
    }

    /// Answers one call made on behalf of `scope`.
    pub async fn call(
        &self,
        scope: &CallScope,
        capability: &str,
        args: Json,
        bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let Some(found) = self.by_name.get(capability) else {
            return Err(HostFailure::new(
                "invalid_host_call",
                format!("no capability {capability:?}"),
            ));
        };
        let size = bytes.len() + args.to_string().len();
        if size > MAX_HOST_CALL {
            return Err(too_large(size));
        }
        let reply = found.call(scope, args, bytes).await?;
        let size = reply.bytes.len() + reply.value.to_string().len();
        if size > MAX_HOST_CALL {
            return Err(too_large(size));
        }
        Ok(reply)
    }
}

fn too_large(size: usize) -> HostFailure {
    HostFailure::new(
        "host_call_too_large",
        format!("{size} bytes; a host call and its answer are at most {MAX_HOST_CALL} each"),
    )
}

/// The calls of one invocation: the registry and the invocation's scope.
pub struct ScopedCalls {
    pub capabilities: Arc<Capabilities>,
    pub scope: CallScope,
}

impl ScopedCalls {
    pub async fn call(
        &self,
        capability: &str,
        args: Json,
        bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        self.capabilities
            .call(&self.scope, capability, args, bytes)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Said {
        word: String,
    }

    #[async_trait]
    impl Capability for Echo {
        type Request = Said;

        fn name(&self) -> &'static str {
            "echo"
        }

        fn shim(&self) -> &'static str {
            "export default (host) => ({ ctx: { echo: host } });"
        }

        async fn call(
            &self,
            scope: &CallScope,
            request: Said,
            bytes: Vec<u8>,
        ) -> Result<HostReply, HostFailure> {
            Ok(HostReply {
                value: Json::String(format!("{} to {}", request.word, scope.app)),
                bytes: bytes.repeat(2),
            })
        }
    }

    fn scope() -> CallScope {
        CallScope {
            app: AppName::parse("shop").unwrap(),
            caller: Caller::Anonymous,
            request_id: "r".into(),
        }
    }

    #[tokio::test]
    async fn calls_reach_their_capability_typed_and_bounded() {
        let registry = Capabilities::new().with(Echo);
        assert_eq!(
            registry.shims(),
            [(
                "echo",
                "export default (host) => ({ ctx: { echo: host } });"
            )]
        );
        let reply = registry
            .call(
                &scope(),
                "echo",
                serde_json::json!({ "word": "hi" }),
                vec![1],
            )
            .await
            .unwrap();
        assert_eq!(reply.value, "hi to shop");
        assert_eq!(reply.bytes, [1, 1]);
        for (capability, args) in [
            ("nothing", serde_json::json!({})),
            ("echo", serde_json::json!({ "word": 1 })),
            ("echo", serde_json::json!({ "word": "a", "more": 1 })),
        ] {
            let failure = registry.call(&scope(), capability, args, Vec::new()).await;
            assert_eq!(failure.unwrap_err().code, "invalid_host_call");
        }
        let huge = vec![0u8; MAX_HOST_CALL];
        let failure = registry
            .call(&scope(), "echo", serde_json::json!({ "word": "a" }), huge)
            .await;
        assert_eq!(failure.unwrap_err().code, "host_call_too_large");
        // An answer over the bound is refused too.
        let failure = registry
            .call(
                &scope(),
                "echo",
                serde_json::json!({ "word": "a" }),
                vec![0u8; MAX_HOST_CALL / 2 + 1],
            )
            .await;
        assert_eq!(failure.unwrap_err().code, "host_call_too_large");
    }
}
