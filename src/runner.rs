//! STUB: the JSON Lines runner. Signature is final.
use std::io::{self, Read, Write};

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub shards: usize,
    pub manual_clock: bool,
    pub dedup_window_ms: u64,
}

pub fn run<R: Read + Send + 'static, W: Write>(
    _input: R,
    _output: W,
    _options: &RunOptions,
) -> io::Result<()> {
    todo!()
}
