//! Shared by the gateway's tests: the built `gateway` binary as a process
//! on 127.0.0.1 (port 0, the address read from its first stdout line), and
//! a blocking HTTP client for it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// No wait here is longer than this, whatever the gateway does.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running gateway process; killed when dropped.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stderr: Arc<Mutex<String>>,
    /// Copies stderr into `stderr`; joined once the process has exited,
    /// so that the log is then complete.
    stderr_reader: Option<thread::JoinHandle<()>>,
    http: reqwest::blocking::Client,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// `Idempotent-Replayed: true` was present.
    pub replayed: bool,
    pub content_type: String,
    pub allow: Option<String>,
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
}

impl Reply {
    /// The `code` of an error body, or the `result` of an ok body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .or_else(|| self.body["result"].as_str())
            .unwrap_or("<no code>")
    }
}

impl Gateway {
    /// Starts the binary with `args` (and `--listen 127.0.0.1:0`) and
    /// waits for it to print its address.
    pub fn start(args: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, first) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let stderr = Arc::clone(&stderr);
            let mut pipe = child.stderr.take().expect("stderr");
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&chunk[..n]);
                    stderr.lock().unwrap().push_str(&text);
                }
            })
        };
        let line = match first.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the gateway printed no address; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first stdout line is {line:?}"))
            .to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        // Loopback only: no proxy from the environment may come between.
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        Gateway {
            child,
            base,
            stderr,
            stderr_reader: Some(stderr_reader),
            http,
        }
    }

    /// Everything the gateway wrote on stderr so far (its log; all of it
    /// once [`Gateway::wait`] has returned).
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `request` with the given headers and body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::blocking::Body>,
    ) -> Result<Reply, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            // `header` appends: a name given twice is sent twice.
            request = request.header(*name, *value);
        }
        let response = request.body(body).send()?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("an ASCII header").to_string())
        };
        let replayed = match header("idempotent-replayed").as_deref() {
            None => false,
            Some("true") => true,
            Some(other) => panic!("Idempotent-Replayed: {other:?}"),
        };
        let content_type = header("content-type").unwrap_or_default();
        let allow = header("allow");
        let text = response.text()?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok(Reply {
            status,
            replayed,
            content_type,
            allow,
            text,
            body,
        })
    }

    /// A request that must get an answer; `key` goes in `Idempotency-Key`.
    pub fn call(&self, method: &str, path: &str, key: Option<u64>, body: &str) -> Reply {
        let key = key.map(|k| k.to_string());
        let headers: Vec<(&str, &str)> = key
            .as_deref()
            .map(|k| ("Idempotency-Key", k))
            .into_iter()
            .collect();
        self.send(method, path, &headers, body.to_string())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, "")
    }

    /// Opens `account` in `currency` and deposits `amount` under key 1.
    pub fn funded(&self, account: u64, currency: &str, amount: &str) {
        let open = format!(r#"{{"account":{account},"currency":"{currency}"}}"#);
        let reply = self.call("POST", "/accounts", None, &open);
        assert_eq!(reply.status, 200, "open {account}: {}", reply.text);
        let deposit = format!(r#"{{"amount":"{amount}"}}"#);
        let path = format!("/accounts/{account}/deposits");
        let reply = self.call("POST", &path, Some(1), &deposit);
        assert_eq!(reply.status, 200, "deposit {account}: {}", reply.text);
    }

    /// `[balance, held, available]` of `account`.
    pub fn balance(&self, account: u64) -> [String; 3] {
        let reply = self.get(&format!("/accounts/{account}/balance"));
        assert_eq!(reply.status, 200, "balance {account}: {}", reply.text);
        ["balance", "held", "available"].map(|name| {
            reply.body[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {}", reply.text))
                .to_string()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit (killing it past [`DEADLINE`]).
    pub fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the gateway") {
                if let Some(reader) = self.stderr_reader.take() {
                    reader.join().expect("the stderr reader");
                }
                return status;
            }
            if started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("the gateway did not exit within {DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh directory under the target's test scratch space, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("gateway-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("make a scratch directory");
        TempDir(path)
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
