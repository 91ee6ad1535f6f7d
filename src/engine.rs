//! STUB: the real engine is being written. Signatures are final.
use crate::outcome::Outcome;
use crate::request::Request;
use crate::risk::RiskPolicy;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Where engine time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Milliseconds since the Unix epoch.
    #[default]
    Wall,
    /// Starts at 0; moves only on `Request::AdvanceClock`.
    Manual,
}

/// Builds one risk policy per shard.
pub type RiskPolicyFactory = Arc<dyn Fn(usize) -> Box<dyn RiskPolicy> + Send + Sync>;

#[derive(Clone)]
pub struct EngineConfig {
    pub shards: usize,
    pub clock: ClockMode,
    pub dedup_window_ms: u64,
    pub risk_policy: Option<RiskPolicyFactory>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clock: ClockMode::Wall,
            dedup_window_ms: crate::limits::DEDUP_WINDOW_MS_DEFAULT,
            risk_policy: None,
        }
    }
}

pub struct Engine {}

impl Engine {
    pub fn start(_config: EngineConfig) -> Engine {
        todo!()
    }
    pub fn client(&self) -> Client {
        todo!()
    }
    pub fn submit_async(&self, _request: Request) -> OutcomeFuture {
        todo!()
    }
    pub fn shard_count(&self) -> usize {
        todo!()
    }
    pub fn shutdown(self) {}
}

pub struct Client {}

impl Client {
    pub fn submit(&mut self, _request: Request) -> Outcome {
        todo!()
    }
    pub fn submit_batch(&mut self, _requests: &[Request]) -> Vec<Outcome> {
        todo!()
    }
    pub fn send(&mut self, _tag: u64, _request: Request) {
        todo!()
    }
    pub fn flush(&mut self) {
        todo!()
    }
    pub fn poll(&mut self, _on_outcome: impl FnMut(u64, Outcome)) -> usize {
        todo!()
    }
    pub fn wait(&mut self, _on_outcome: impl FnMut(u64, Outcome)) -> usize {
        todo!()
    }
    pub fn in_flight(&self) -> usize {
        todo!()
    }
}

pub struct OutcomeFuture {}

impl Future for OutcomeFuture {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        todo!()
    }
}
