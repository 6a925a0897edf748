//! Operators' WebAssembly plugins on the guardrails' hook points (the ABI
//! is in docs/plugins.md). Each call runs in a fresh instance of the
//! module, in a store with a fuel budget and a memory ceiling and with
//! nothing imported: a plugin can read and rewrite what it is given, and
//! nothing else. A plugin that traps, runs out of fuel or memory, or
//! answers what the ABI does not say fails the request (500) or, when it
//! fails open, is skipped; either way the data plane carries on.

use crate::error::GatewayError;
use shared::guardrails::PLUGIN_MEMORY_CEILING;
use std::sync::LazyLock;
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap,
};

/// One engine for every module: compiled code is shared by every call.
static ENGINE: LazyLock<Result<Engine, String>> = LazyLock::new(|| {
    let mut config = Config::new();
    config.consume_fuel(true);
    // Each call's instance takes a slot of a pool reserved once (its memory
    // reset on release, the first pages kept resident), instead of mapping
    // and unmapping memory of its own: a call per streamed event stays cheap.
    // A call runs start to finish on its worker thread, so a few slots per
    // core are plenty.
    let slots = std::thread::available_parallelism()
        .map_or(0, |cores| {
            u32::try_from(cores.get() * 4).unwrap_or(u32::MAX)
        })
        .max(64);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(usize::try_from(PLUGIN_MEMORY_CEILING).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(KEPT_RESIDENT);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| e.to_string())
});

/// Bytes of a pooled memory zeroed in place rather than given back to the
/// kernel: what a small plugin touches, so its next call takes no page faults.
const KEPT_RESIDENT: usize = 64 << 10;

const ALLOC: &str = "sb_alloc";
const MEMORY: &str = "memory";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Request,
    Response,
    /// One event of a streamed answer.
    Chunk,
}

impl Hook {
    fn export(self) -> &'static str {
        match self {
            Hook::Request => "sb_on_request",
            Hook::Response => "sb_on_response",
            Hook::Chunk => "sb_on_chunk",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Hook::Request => "request",
            Hook::Response => "response",
            Hook::Chunk => "chunk",
        }
    }
}

/// What a hook answered.
pub enum Outcome {
    Continue,
    /// The body to send on in place of the one it was given.
    Replace(Vec<u8>),
    /// The request refused, with the plugin's message.
    Reject(String),
}

pub struct Plugin {
    pub name: String,
    /// Resolved once (there is nothing to link): each call only instantiates.
    module: InstancePre<StoreLimits>,
    fail_open: bool,
    fuel: u64,
    max_memory: usize,
    pub on_request: bool,
    pub on_response: bool,
    /// Sees a streamed answer event by event; without it, a plugin with a
    /// response hook sees a streamed answer whole, at its end.
    pub on_chunk: bool,
}

impl Plugin {
    /// Compiles and checks a module against the ABI.
    pub fn compile(spec: &shared::guardrails::Plugin) -> Result<Self, String> {
        let engine = ENGINE.as_ref().map_err(Clone::clone)?;
        let module = Module::new(engine, spec.module()?)
            .map_err(|e| format!("plugin {:?}: not a valid module: {e}", spec.name))?;
        if let Some(import) = module.imports().next() {
            return Err(format!(
                "plugin {:?}: imports {}::{}; plugins may import nothing",
                spec.name,
                import.module(),
                import.name()
            ));
        }
        let export = |name: &str| module.exports().find(|e| e.name() == name).map(|e| e.ty());
        if !matches!(export(MEMORY), Some(ExternType::Memory(_)))
            || !matches!(export(ALLOC), Some(ExternType::Func(_)))
        {
            return Err(format!(
                "plugin {:?}: must export `{MEMORY}` and `{ALLOC}`",
                spec.name
            ));
        }
        let hook = |hook: Hook| matches!(export(hook.export()), Some(ExternType::Func(_)));
        let (on_request, on_response, on_chunk) =
            (hook(Hook::Request), hook(Hook::Response), hook(Hook::Chunk));
        if !on_request && !on_response && !on_chunk {
            return Err(format!(
                "plugin {:?}: exports no hook (sb_on_request, sb_on_response, sb_on_chunk)",
                spec.name
            ));
        }
        let module = Linker::new(engine)
            .instantiate_pre(&module)
            .map_err(|e| format!("plugin {:?}: {e}", spec.name))?;
        Ok(Plugin {
            name: spec.name.clone(),
            module,
            fail_open: spec.fail_open,
            fuel: spec.fuel,
            max_memory: usize::try_from(spec.max_memory_bytes).unwrap_or(usize::MAX),
            on_request,
            on_response,
            on_chunk,
        })
    }

    /// Runs one hook on `input` (a JSON body).
    pub fn run(&self, hook: Hook, input: &[u8]) -> Result<Outcome, GatewayError> {
        let (outcome, result) = match self.call(hook, input) {
            Ok(outcome) => {
                let result = match &outcome {
                    Outcome::Continue => "continue",
                    Outcome::Replace(_) => "rewrite",
                    Outcome::Reject(_) => "reject",
                };
                (Ok(outcome), result)
            }
            Err(failure) => {
                tracing::warn!(plugin = %self.name, hook = hook.as_str(), %failure.detail, "plugin failed");
                let outcome = match self.fail_open {
                    true => Ok(Outcome::Continue),
                    false => Err(GatewayError::PluginFailed(self.name.clone())),
                };
                (outcome, failure.kind)
            }
        };
        metrics::counter!("switchboard_plugin_calls_total", "plugin" => self.name.clone(),
            "hook" => hook.as_str(), "result" => result)
        .increment(1);
        outcome
    }

    fn call(&self, hook: Hook, input: &[u8]) -> Result<Outcome, Failure> {
        let engine = ENGINE.as_ref().map_err(|e| Failure::error(e.clone()))?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.max_memory)
            .instances(1)
            .trap_on_grow_failure(true)
            .build();
        let mut store: Store<StoreLimits> = Store::new(engine, limits);
        store.limiter(|limits| limits);
        store.set_fuel(self.fuel).map_err(Failure::from)?;
        let instance = self.module.instantiate(&mut store).map_err(Failure::from)?;
        let memory = instance
            .get_memory(&mut store, MEMORY)
            .ok_or_else(|| Failure::abi("no memory"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, ALLOC)
            .map_err(Failure::from)?;
        let on = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, hook.export())
            .map_err(Failure::from)?;
        let len = i32::try_from(input.len()).map_err(|_| Failure::abi("input too large"))?;
        let at = alloc.call(&mut store, len).map_err(Failure::from)?;
        let at_offset = usize::try_from(at).map_err(|_| Failure::abi("negative pointer"))?;
        memory
            .write(&mut store, at_offset, input)
            .map_err(|_| Failure::abi("sb_alloc gave memory out of bounds"))?;
        let answer = on.call(&mut store, (at, len)).map_err(Failure::from)?;
        if answer == 0 {
            return Ok(Outcome::Continue);
        }
        // (pointer << 32) | length of the verdict: a tag byte, then its bytes.
        let answer = answer as u64;
        let (at, len) = ((answer >> 32) as usize, (answer & 0xffff_ffff) as usize);
        let mut verdict = vec![0; len];
        memory
            .read(&store, at, &mut verdict)
            .map_err(|_| Failure::abi("verdict out of bounds"))?;
        match verdict.split_first() {
            Some((b'B', body)) => Ok(Outcome::Replace(body.to_vec())),
            Some((b'R', message)) => Ok(Outcome::Reject(
                String::from_utf8_lossy(message).into_owned(),
            )),
            _ => Err(Failure::abi("the verdict starts with neither 'B' nor 'R'")),
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a call failed: a bounded kind for the metric, the detail for the log.
struct Failure {
    kind: &'static str,
    detail: String,
}

impl Failure {
    fn abi(detail: &str) -> Self {
        Failure {
            kind: "abi",
            detail: detail.to_owned(),
        }
    }

    fn error(detail: String) -> Self {
        Failure {
            kind: "error",
            detail,
        }
    }
}

impl From<wasmtime::Error> for Failure {
    fn from(error: wasmtime::Error) -> Self {
        let kind = match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => "out_of_fuel",
            Some(_) => "trap",
            None if format!("{error:#}").contains("memory") => "memory",
            None => "error",
        };
        Failure {
            kind,
            detail: format!("{error:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(text: &str, fuel: u64) -> Plugin {
        use base64::Engine;
        let wasm = wat::parse_str(text).expect("valid text");
        Plugin::compile(&shared::guardrails::Plugin {
            name: "p".into(),
            wasm_base64: base64::engine::general_purpose::STANDARD.encode(wasm),
            fail_open: false,
            fuel,
            max_memory_bytes: 1 << 20,
        })
        .expect("compiles")
    }

    #[test]
    fn the_example_refuses_and_masks_requests_and_answers() {
        let example = plugin(
            include_str!("../../plugins/examples/redact.wat"),
            50_000_000,
        );
        assert!(example.on_request && example.on_response);
        let Ok(Outcome::Replace(body)) = example.run(Hook::Response, br#"{"a":"my password"}"#)
        else {
            panic!("masked");
        };
        assert_eq!(body, br#"{"a":"my ********"}"#);
        let Ok(Outcome::Reject(message)) = example.run(Hook::Request, b"a jailbreak, please")
        else {
            panic!("refused");
        };
        assert!(message.contains("jailbreak"), "{message}");
        assert!(matches!(
            example.run(Hook::Request, b"{}"),
            Ok(Outcome::Continue)
        ));
        // A large input grows its memory within the ceiling.
        let large = format!("{{\"a\":\"{}password\"}}", "x".repeat(100_000));
        assert!(matches!(
            example.run(Hook::Request, large.as_bytes()),
            Ok(Outcome::Replace(_))
        ));
    }

    #[test]
    fn a_plugin_out_of_fuel_fails_cleanly_and_the_next_call_runs_afresh() {
        let spin = plugin(
            r#"(module (memory (export "memory") 1)
                 (func (export "sb_alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "sb_on_request") (param i32 i32) (result i64)
                   (if (i32.eq (local.get 1) (i32.const 4)) (then (loop $l (br $l))))
                   (i64.const 0)))"#,
            10_000,
        );
        assert!(matches!(
            spin.run(Hook::Request, b"spin"),
            Err(GatewayError::PluginFailed(_))
        ));
        assert!(matches!(
            spin.run(Hook::Request, b"ok"),
            Ok(Outcome::Continue)
        ));
        let importing = wat::parse_str(
            r#"(module (import "env" "f" (func)) (memory (export "memory") 1)
                 (func (export "sb_alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "sb_on_request") (param i32 i32) (result i64) (i64.const 0)))"#,
        )
        .expect("valid text");
        use base64::Engine;
        let error = Plugin::compile(&shared::guardrails::Plugin {
            name: "i".into(),
            wasm_base64: base64::engine::general_purpose::STANDARD.encode(importing),
            fail_open: false,
            fuel: 1_000,
            max_memory_bytes: 1 << 20,
        })
        .expect_err("imports");
        assert!(error.contains("import nothing"), "{error}");
    }
}
