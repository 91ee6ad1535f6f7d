//! `debitcore run`: requests as JSON Lines in, outcomes as JSON Lines out.
//!
//! A reader thread cuts standard input into lines and hands them over in
//! chunks (as much as is already buffered, so a slow producer still gets
//! answers line by line). The runner thread parses each line, sends it
//! through one pipelined [`Client`] tagged with its line number, and writes
//! outcomes strictly in input order from a bounded reorder window. Memory is
//! bounded by that window, whatever the length of the input.

use crate::codec;
use crate::engine::{Client, ClockMode, Engine, EngineConfig};
use crate::outcome::Outcome;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::mpsc;

/// Lines sent and not yet written before the runner waits for the oldest.
const REORDER_WINDOW_LINES_MAX: usize = 64 * 1024;
/// Lines the reader hands over at once at most.
const READER_CHUNK_LINES_MAX: usize = 4096;
/// Chunks in flight between the reader and the runner.
const READER_CHUNKS_MAX: usize = 16;

/// What `debitcore run` was asked for (an in-memory run; `main.rs` adds the
/// data directory and durability to the engine config).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Number of shards (worker threads), at least 1.
    pub shards: usize,
    /// `--clock manual`: engine time starts at 0 and moves only on
    /// `advance_clock`. Otherwise the wall clock, under which an
    /// `advance_clock` line is malformed.
    pub manual_clock: bool,
    /// `--dedup-window-ms`: how long keys are remembered at least, engine
    /// time, ms (> 0).
    pub dedup_window_ms: u64,
}

enum Slot {
    Pending,
    Outcome(Outcome),
    Malformed(String),
}

impl RunOptions {
    /// The engine configuration these options ask for (in memory).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            shards: self.shards,
            clock: if self.manual_clock {
                ClockMode::Manual
            } else {
                ClockMode::Wall
            },
            dedup_window_ms: self.dedup_window_ms,
            ..EngineConfig::default()
        }
    }
}

/// Runs requests from `input` to the end on a new in-memory engine and
/// writes one outcome line per input line to `output`, in input order.
pub fn run<R: Read + Send + 'static, W: Write>(
    input: R,
    output: W,
    options: &RunOptions,
) -> io::Result<()> {
    let engine = Engine::start(options.engine_config());
    run_on(&engine, input, output, options.manual_clock)
}

/// As [`run`], on an engine the caller opened (e.g. over a data directory).
/// `manual_clock` must match the engine's clock: it decides whether
/// `advance_clock` lines are malformed.
pub fn run_on<R: Read + Send + 'static, W: Write>(
    engine: &Engine,
    input: R,
    output: W,
    manual_clock: bool,
) -> io::Result<()> {
    let (chunks_tx, chunks) = mpsc::sync_channel::<io::Result<Vec<Vec<u8>>>>(READER_CHUNKS_MAX);
    let reader = std::thread::Builder::new()
        .name("debitcore-reader".into())
        .spawn(move || read_lines(input, &chunks_tx))?;
    let mut state = Runner {
        client: engine.client(),
        manual_clock,
        window: VecDeque::new(),
        first_unwritten: 1,
        next_line: 1,
        output: BufWriter::with_capacity(1 << 16, output),
        text: String::with_capacity(256),
    };
    let result = state.drive(&chunks);
    drop(chunks);
    // The reader ends on its own at end of input, or when its next send
    // finds the channel closed.
    let _ = reader.join();
    result
}

fn read_lines<R: Read>(input: R, chunks: &mpsc::SyncSender<io::Result<Vec<Vec<u8>>>>) {
    let mut input = BufReader::with_capacity(1 << 16, input);
    // The start of a line whose end has not been read yet.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        // Blocks only when everything read so far has been handed over.
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = chunks.send(Err(e));
                return;
            }
        };
        if buffer.is_empty() {
            break;
        }
        // Every complete line of this read goes over now, in chunks: the
        // next read may wait on the producer, and a partial line at the
        // end must not hold back the whole lines before it.
        let mut chunk = Vec::new();
        let mut rest = buffer;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut partial);
            line.extend_from_slice(&rest[..end]);
            chunk.push(line);
            rest = &rest[end + 1..];
            if chunk.len() >= READER_CHUNK_LINES_MAX
                && chunks.send(Ok(std::mem::take(&mut chunk))).is_err()
            {
                return;
            }
        }
        partial.extend_from_slice(rest);
        let consumed = buffer.len();
        input.consume(consumed);
        if !chunk.is_empty() && chunks.send(Ok(chunk)).is_err() {
            return;
        }
    }
    if !partial.is_empty() {
        // A last line without a newline is still a line.
        let _ = chunks.send(Ok(vec![partial]));
    }
}

struct Runner<W: Write> {
    client: Client,
    manual_clock: bool,
    /// Outcomes of lines `first_unwritten..next_line`, oldest first.
    window: VecDeque<Slot>,
    first_unwritten: u64,
    next_line: u64,
    output: BufWriter<W>,
    text: String,
}

fn place(window: &mut VecDeque<Slot>, first: u64, tag: u64, outcome: Outcome) {
    window[(tag - first) as usize] = Slot::Outcome(outcome);
}

impl<W: Write> Runner<W> {
    fn drive(&mut self, chunks: &mpsc::Receiver<io::Result<Vec<Vec<u8>>>>) -> io::Result<()> {
        loop {
            let chunk = match chunks.try_recv() {
                Ok(chunk) => chunk,
                Err(mpsc::TryRecvError::Empty) => {
                    // Input is slower than us: answer everything so far
                    // before waiting for more.
                    self.settle()?;
                    match chunks.recv() {
                        Ok(chunk) => chunk,
                        Err(mpsc::RecvError) => break,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            }?;
            for line in chunk {
                self.take_line(&line)?;
            }
            self.collect(false)?;
        }
        self.settle()
    }

    fn take_line(&mut self, line: &[u8]) -> io::Result<()> {
        let number = self.next_line;
        self.next_line += 1;
        match codec::parse_line(line, self.manual_clock) {
            Ok(request) => {
                self.window.push_back(Slot::Pending);
                self.client.send(number, request);
            }
            Err(error) => self.window.push_back(Slot::Malformed(error)),
        }
        if self.window.len() >= REORDER_WINDOW_LINES_MAX {
            self.collect(true)?;
        }
        Ok(())
    }

    /// Takes arrived outcomes and writes the finished prefix. With `block`,
    /// waits until at least the oldest line is answered.
    fn collect(&mut self, block: bool) -> io::Result<()> {
        let first = self.first_unwritten;
        let window = &mut self.window;
        self.client
            .poll(|tag, outcome| place(window, first, tag, outcome));
        while block && matches!(self.window.front(), Some(Slot::Pending)) {
            let window = &mut self.window;
            self.client
                .wait(|tag, outcome| place(window, first, tag, outcome));
        }
        self.write_finished()
    }

    fn write_finished(&mut self) -> io::Result<()> {
        while let Some(slot) = self.window.front() {
            self.text.clear();
            match slot {
                Slot::Pending => break,
                Slot::Outcome(outcome) => {
                    codec::write_outcome(&mut self.text, self.first_unwritten, outcome)
                }
                Slot::Malformed(error) => {
                    codec::write_malformed(&mut self.text, self.first_unwritten, error)
                }
            }
            self.text.push('\n');
            self.output.write_all(self.text.as_bytes())?;
            self.window.pop_front();
            self.first_unwritten += 1;
        }
        Ok(())
    }

    /// Answers every line taken so far and flushes the output.
    fn settle(&mut self) -> io::Result<()> {
        self.client.flush();
        while !self.window.is_empty() {
            self.collect(true)?;
        }
        self.output.flush()
    }
}
