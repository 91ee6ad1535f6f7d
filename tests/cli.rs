//! The `debitcore` binary as a process: arguments, exit codes, hostile input
//! and streaming.
//!
//! SPEC, "The runner": one outcome line per input line, in order; exit 0 at
//! the end of input whatever the outcomes; bad arguments print a usage
//! message and exit 2; answers start before the input ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{compare_streams, split_output, Outcome};

/// No test here may take longer than this, whatever the binary does.
const DEADLINE: Duration = Duration::from_secs(120);

struct Finished {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_debitcore"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the debitcore binary")
}

/// Runs the binary over `input` and collects everything, killing it if it
/// outlives `DEADLINE`.
fn run_cli(args: &[&str], input: &[u8]) -> Finished {
    let mut child = spawn(args);
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A binary that exits early (bad arguments) closes the pipe: ignore that.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for debitcore") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("debitcore {args:?} did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    writer.join().expect("writer thread");
    Finished {
        code: status.code(),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned(),
    }
}

fn example(name: &str, suffix: &str) -> String {
    let path = format!(
        "{}/tests/data/streams/{name}.{suffix}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn check_example(name: &str, args: &[&str]) {
    let requests = example(name, "requests");
    let expected: Vec<Outcome> = example(name, "outcomes")
        .lines()
        .map(|l| Outcome::parse(l).expect("expected outcome"))
        .collect();
    let finished = run_cli(args, requests.as_bytes());
    assert_eq!(
        finished.code,
        Some(0),
        "exit code; stderr: {}",
        finished.stderr
    );
    let actual = split_output(&finished.stdout);
    let request_lines: Vec<&str> = requests
        .strip_suffix('\n')
        .unwrap_or(&requests)
        .split('\n')
        .collect();
    if let Err(why) = compare_streams(&request_lines, &expected, &actual) {
        panic!("debitcore {args:?} over {name}: {why}");
    }
}

#[test]
fn core_example_through_stdin() {
    check_example("core", &["run", "--clock", "manual"]);
}

#[test]
fn preauth_example_with_shards_and_window() {
    check_example(
        "preauth",
        &[
            "run",
            "--shards",
            "3",
            "--clock",
            "manual",
            "--dedup-window-ms",
            "86400000",
        ],
    );
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    let cases: [&[&str]; 8] = [
        &["run", "--shards", "0"],
        &["run", "--shards", "x"],
        &["run", "--clock", "sundial"],
        &["frobnicate"],
        &["run", "--shards", "-1"],
        &["run", "--dedup-window-ms", "soon"],
        &["run", "--durability", "sometimes"],
        &["run", "--no-such-flag"],
    ];
    let mut problems = Vec::new();
    for args in cases {
        let finished = run_cli(args, b"{\"op\":\"balance\",\"account\":1}\n");
        if finished.code != Some(2) {
            problems.push(format!(
                "debitcore {args:?} exited with {:?}, not 2; stderr: {:?}",
                finished.code, finished.stderr
            ));
        }
        if !finished.stderr.to_lowercase().contains("usage") {
            problems.push(format!(
                "debitcore {args:?} printed no usage message to stderr, only: {:?}",
                finished.stderr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A data directory keeps the shard count it was made with; a `--shards`
/// that asks for another is named on stderr, not silently ignored, and the
/// outcomes are the directory's.
#[test]
fn a_data_dir_keeps_its_shard_count_and_says_so() {
    let dir = std::env::temp_dir().join(format!("debitcore-cli-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.to_str().expect("a UTF-8 temp path");
    let open = b"{\"op\":\"open_account\",\"account\":1,\"currency\":\"USD\"}\n";
    let made = run_cli(&["run", "--shards", "2", "--data-dir", path], open);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    assert!(!made.stderr.contains("ignored"), "{}", made.stderr);
    let again = run_cli(&["run", "--shards", "3", "--data-dir", path], open);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("has 2 shards") && again.stderr.contains("--shards 3 is ignored"),
        "{}",
        again.stderr
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("account_exists"));
    let same = run_cli(&["run", "--shards", "2", "--data-dir", path], b"");
    assert!(!same.stderr.contains("ignored"), "{}", same.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_input_exits_0_silently() {
    let finished = run_cli(&["run", "--clock", "manual"], b"");
    assert_eq!(finished.code, Some(0), "stderr: {}", finished.stderr);
    assert!(
        finished.stdout.is_empty(),
        "output: {:?}",
        String::from_utf8_lossy(&finished.stdout)
    );
}

/// "the default is the wall clock, under which `advance_clock` is
/// malformed".
#[test]
fn wall_clock_refuses_advance_clock() {
    let finished = run_cli(
        &["run"],
        b"{\"op\":\"open_account\",\"account\":1,\"currency\":\"USD\"}\n{\"op\":\"advance_clock\",\"ms\":5}\n{\"op\":\"balance\",\"account\":1}\n",
    );
    assert_eq!(finished.code, Some(0), "stderr: {}", finished.stderr);
    let lines = split_output(&finished.stdout);
    let outcomes: Vec<Outcome> = lines
        .iter()
        .map(|l| Outcome::parse(l).expect("outcome"))
        .collect();
    assert_eq!(outcomes.len(), 3, "{lines:?}");
    assert_eq!(outcomes[0].result, "ok");
    assert_eq!(outcomes[1].result, "malformed", "{lines:?}");
    assert_eq!(outcomes[2].result, "ok");
}

/// One outcome per line, whatever the line holds, and the run goes on.
#[test]
fn hostile_input_one_outcome_per_line() {
    let mut input: Vec<u8> = Vec::new();
    let mut add = |bytes: &[u8]| {
        input.extend_from_slice(bytes);
        input.push(b'\n');
    };
    // 1, 2: an account with money.
    add(br#"{"op":"open_account","account":1,"currency":"USD"}"#);
    add(br#"{"op":"deposit","id":1,"account":1,"amount":"10"}"#);
    // 3: a megabyte of letters.
    add(&vec![b'a'; 1 << 20]);
    // 4: a megabyte of valid JSON (an ignored field): ok, or refused as too
    // long, but not a crash.
    let mut long = br#"{"op":"balance","account":1,"pad":""#.to_vec();
    long.extend(vec![b'p'; 1 << 20]);
    long.extend_from_slice(br#""}"#);
    add(&long);
    // 5: an ignored field nested 100,000 deep.
    let mut deep = br#"{"op":"balance","account":1,"x":"#.to_vec();
    deep.extend(vec![b'['; 100_000]);
    deep.extend(vec![b']'; 100_000]);
    deep.push(b'}');
    add(&deep);
    // 6: a million open brackets.
    add(&vec![b'['; 1_000_000]);
    // 7: invalid UTF-8.
    add(b"\xff\xfe\xfd\x80");
    // 8: invalid UTF-8 inside a string of an otherwise valid request.
    add(b"{\"op\":\"balance\",\"account\":1,\"note\":\"\xff\xc0\"}");
    // 9, 10: NUL bytes.
    add(b"\0");
    add(b"{\"op\":\"balance\",\"account\":1}\0");
    // 11, 12, 13: CRLF line endings (CR is JSON whitespace).
    add(b"{\"op\":\"deposit\",\"id\":2,\"account\":1,\"amount\":\"5\"}\r");
    add(b"{\"op\":\"balance\",\"account\":1}\r");
    add(b"\r");
    // 14: a final line without a newline.
    input.extend_from_slice(br#"{"op":"balance","account":1}"#);

    let finished = run_cli(&["run", "--clock", "manual", "--shards", "2"], &input);
    assert_eq!(finished.code, Some(0), "stderr: {}", finished.stderr);
    let lines = split_output(&finished.stdout);
    let shown: Vec<String> = lines
        .iter()
        .map(|l| l.chars().take(200).collect())
        .collect();
    assert_eq!(lines.len(), 14, "one outcome per input line: {shown:#?}");
    let outcomes: Vec<Outcome> = lines
        .iter()
        .map(|l| Outcome::parse(l).expect("outcome"))
        .collect();
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.line, i as u64 + 1, "line numbers: {shown:#?}");
    }
    let balance = |o: &Outcome, amount: &str| {
        Outcome::new(o.line, "ok")
            .with("balance", amount.to_string())
            .with("held", "0.00".to_string())
            .with("available", amount.to_string())
    };
    let must = |i: usize, want: Outcome| {
        if let Err(why) = want.check(&outcomes[i]) {
            panic!("line {}: {why}\n{shown:#?}", i + 1);
        }
    };
    let ok_or_malformed = |i: usize, want: Outcome| {
        if outcomes[i].result != "malformed" {
            must(i, want);
        }
    };
    must(0, Outcome::new(1, "ok"));
    must(1, Outcome::new(2, "ok"));
    must(2, Outcome::new(3, "malformed"));
    ok_or_malformed(3, balance(&outcomes[3], "10.00"));
    ok_or_malformed(4, balance(&outcomes[4], "10.00"));
    must(5, Outcome::new(6, "malformed"));
    must(6, Outcome::new(7, "malformed"));
    ok_or_malformed(7, balance(&outcomes[7], "10.00"));
    must(8, Outcome::new(9, "malformed"));
    must(9, Outcome::new(10, "malformed"));
    must(10, Outcome::new(11, "ok"));
    must(11, balance(&outcomes[11], "15.00"));
    must(12, Outcome::new(13, "malformed"));
    must(13, balance(&outcomes[13], "15.00"));
}

/// "answers start before the input ends": each line is answered while
/// standard input is still open.
#[test]
fn answers_stream_before_input_ends() {
    let mut child = spawn(&["run", "--clock", "manual", "--shards", "2"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut ask = |request: &str| -> Outcome {
        stdin
            .write_all(request.as_bytes())
            .expect("write a request");
        stdin.write_all(b"\n").expect("write a newline");
        stdin.flush().expect("flush");
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => Outcome::parse(&line).expect("outcome"),
            Err(_) => {
                let _ = child.kill();
                panic!("no answer to {request} within 20 s while stdin stays open");
            }
        }
    };
    let first = ask(r#"{"op":"open_account","account":1,"currency":"JPY"}"#);
    assert_eq!(first, Outcome::new(1, "ok"));
    let second = ask(r#"{"op":"deposit","id":1,"account":1,"amount":"500"}"#);
    assert_eq!(second, Outcome::new(2, "ok"));
    let third = ask(r#"{"op":"balance","account":1}"#);
    let want = Outcome::new(3, "ok")
        .with("balance", "500".to_string())
        .with("held", "0".to_string())
        .with("available", "500".to_string());
    want.check(&third).unwrap_or_else(|why| panic!("{why}"));
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("debitcore did not exit within 20 s of the end of its input");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    reader.join().expect("reader thread");
}

/// A line cut by a pause in the input must not hold back the whole lines
/// before it (the reader once handed lines over only when its buffer ran
/// dry, so a partial line at the end of a read delayed them).
#[test]
fn a_partial_line_does_not_hold_back_complete_ones() {
    let mut child = spawn(&["run", "--clock", "manual"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    stdin
        .write_all(b"{\"op\":\"open_account\",\"account\":1,\"currency\":\"USD\"}\n{\"op\":\"bal")
        .expect("write");
    stdin.flush().expect("flush");
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("line 1 held back by the partial line 2");
        });
    assert_eq!(
        Outcome::parse(&first).expect("outcome"),
        Outcome::new(1, "ok")
    );
    stdin.write_all(b"ance\",\"account\":1}\n").expect("write");
    drop(stdin);
    let second = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("line 2 answered");
    let want = Outcome::new(2, "ok")
        .with("balance", "0.00".to_string())
        .with("held", "0.00".to_string())
        .with("available", "0.00".to_string());
    want.check(&Outcome::parse(&second).expect("outcome"))
        .unwrap_or_else(|why| panic!("{why}"));
    assert!(child.wait().expect("exit").success());
    reader.join().expect("reader");
}

/// SPEC, "The runner": "Over a data directory, a second run resumes the
/// state the first left, and numbers its lines from 1 again." Every stream
/// in tests/data/streams (the merchants one too: settlements, queued
/// debits, closed accounts and statements must survive), fed in three
/// parts to three processes over one data directory, answers what the
/// stream's outcome file requires.
#[test]
fn every_example_split_by_restarts_over_a_data_dir() {
    for name in ["core", "preauth", "merchants", "closing", "history"] {
        let requests = example(name, "requests");
        let outcomes = example(name, "outcomes");
        let request_lines: Vec<&str> = requests.lines().collect();
        let outcome_lines: Vec<&str> = outcomes.lines().collect();
        assert_eq!(request_lines.len(), outcome_lines.len(), "{name}");
        let dir =
            std::env::temp_dir().join(format!("debitcore-cli-split-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dir_arg = dir.to_str().expect("a UTF-8 temp path");
        let n = request_lines.len();
        let cuts = [0, n / 3, 2 * n / 3 + 1, n];
        for range in cuts.windows(2) {
            let (from, to) = (range[0], range[1]);
            let mut input = request_lines[from..to].join("\n");
            input.push('\n');
            // The outcomes of this part, numbered from 1 as this run does.
            let expected: Vec<Outcome> = outcome_lines[from..to]
                .iter()
                .map(|l| {
                    let mut o = Outcome::parse(l).expect("expected outcome");
                    o.line -= from as u64;
                    o
                })
                .collect();
            let args = [
                "run",
                "--clock",
                "manual",
                "--shards",
                "2",
                "--data-dir",
                dir_arg,
            ];
            let finished = run_cli(&args, input.as_bytes());
            assert_eq!(
                finished.code,
                Some(0),
                "{name}, lines {}..={to}: {}",
                from + 1,
                finished.stderr
            );
            let actual = split_output(&finished.stdout);
            if let Err(why) = compare_streams(&request_lines[from..to], &expected, &actual) {
                panic!(
                    "{name} split by restarts, the run of lines {}..={to} (numbered from 1): {why}",
                    from + 1
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
