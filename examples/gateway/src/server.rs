//! The HTTP side: routes, the one handler every operation goes through,
//! responses, and serving with a graceful shutdown.
//!
//! A request's path: axum matches the route (one `OpRoute` per route,
//! fixed at start) → `handle` parses the path integers, takes the key
//! from `Idempotency-Key`, reads the body (at most [`BODY_BYTES_MAX`]) and
//! writes the request line ([`crate::line`]) → `Engine::submit_async` (the
//! task awaits the outcome; no thread blocks) → the outcome's status from
//! [`crate::status`], its body, `Idempotent-Replayed` on a replay → one
//! counter, one histogram sample and one debug log line.

use std::future::{Future, IntoFuture};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;
use debitcore::{Code, Engine, Info, Op, Outcome};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::line::{self, BadInput};
use crate::status::{self, GatewayError};
use crate::telemetry;

/// The largest request body taken; a bigger one is 413 `body_too_large`.
/// The largest valid request (`set_limits` with every field) is about
/// 200 bytes: 16 KiB leaves room for fields the engine ignores.
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// How long a shutdown waits for open connections to finish what they
/// are doing before it stops waiting for them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The header that carries a keyed request's id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set to `true` on the answer to a retry: the original outcome, again.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// What answers the requests.
pub enum Backend {
    /// The engine.
    Engine(Arc<Engine>),
    /// Nothing: every well-formed request answers `ok` at once, without the
    /// engine. For measuring what HTTP alone costs (`--engine none`).
    Bypass,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    backend: Backend,
    metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// `metrics`: the installed recorder's handle, for `GET /metrics`
    /// (`None`: that route answers 404).
    pub fn new(backend: Backend, metrics: Option<PrometheusHandle>) -> AppState {
        AppState {
            inner: Arc::new(Shared { backend, metrics }),
        }
    }
}

/// One route's operation.
#[derive(Clone, Copy, Debug)]
struct OpRoute {
    op: Op,
    /// The id comes from `Idempotency-Key`, which is then required.
    keyed: bool,
    /// The body gives fields (`false` for GETs: a body is ignored).
    reads_body: bool,
    /// The query string's parameters with these names give integer
    /// fields (`history`'s `limit` and `before`); every route ignores any
    /// other parameter.
    query_fields: &'static [&'static str],
}

const fn keyed(op: Op) -> OpRoute {
    OpRoute {
        op,
        keyed: true,
        reads_body: true,
        query_fields: &[],
    }
}

const fn unkeyed(op: Op) -> OpRoute {
    OpRoute {
        op,
        keyed: false,
        reads_body: true,
        query_fields: &[],
    }
}

const fn query(op: Op) -> OpRoute {
    OpRoute {
        op,
        keyed: false,
        reads_body: false,
        query_fields: &[],
    }
}

/// A GET whose query string gives `fields` (integers).
const fn query_with(op: Op, fields: &'static [&'static str]) -> OpRoute {
    OpRoute {
        query_fields: fields,
        ..query(op)
    }
}

fn route(method: Method, op: OpRoute) -> MethodRouter<AppState> {
    let handler = move |State(state): State<AppState>,
                        path: Result<Path<Vec<(String, String)>>, PathRejection>,
                        RawQuery(query): RawQuery,
                        headers: HeaderMap,
                        body: Result<Bytes, BytesRejection>| {
        handle(state, op, path, query, headers, body)
    };
    if method == Method::GET {
        get(handler)
    } else if method == Method::PUT {
        put(handler)
    } else {
        post(handler)
    }
}

/// Every route (README.md, "Routes", lists them).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/accounts", route(Method::POST, unkeyed(Op::OpenAccount)))
        .route(
            "/accounts/{account}/deposits",
            route(Method::POST, keyed(Op::Deposit)),
        )
        .route(
            "/accounts/{account}/debits",
            route(Method::POST, keyed(Op::Debit)),
        )
        .route(
            "/accounts/{account}/holds",
            route(Method::POST, keyed(Op::Authorize)),
        )
        .route(
            "/accounts/{account}/holds/{auth}/captures",
            route(Method::POST, keyed(Op::Capture)),
        )
        .route(
            "/accounts/{account}/holds/{auth}/increments",
            route(Method::POST, keyed(Op::Increment)),
        )
        .route(
            "/accounts/{account}/holds/{auth}/void",
            route(Method::POST, keyed(Op::Void)),
        )
        .route(
            "/accounts/{account}/refunds",
            route(Method::POST, keyed(Op::Refund)),
        )
        .route(
            "/accounts/{account}/limits",
            route(Method::PUT, unkeyed(Op::SetLimits)),
        )
        .route(
            "/accounts/{account}/freeze",
            route(Method::POST, unkeyed(Op::Freeze)),
        )
        .route(
            "/accounts/{account}/unfreeze",
            route(Method::POST, unkeyed(Op::Unfreeze)),
        )
        .route(
            "/accounts/{account}/balance",
            route(Method::GET, query(Op::Balance)),
        )
        .route(
            "/accounts/{account}/transactions/{id}",
            route(Method::GET, query(Op::Status)),
        )
        .route(
            "/accounts/{account}/close",
            route(Method::POST, unkeyed(Op::CloseAccount)),
        )
        .route(
            "/accounts/{account}/history",
            route(Method::GET, query_with(Op::History, &["limit", "before"])),
        )
        .route("/merchants", route(Method::POST, unkeyed(Op::OpenMerchant)))
        .route(
            "/merchants/{merchant}",
            route(Method::GET, query(Op::Merchant)),
        )
        .route(
            "/merchants/{merchant}/settlements",
            route(Method::POST, keyed(Op::Settle)),
        )
        .route(
            "/accounts/{account}/queued-debits",
            route(Method::POST, keyed(Op::QueueDebit)),
        )
        .route("/batches", route(Method::POST, unkeyed(Op::RunBatch)))
        .route(
            "/clock/advance",
            route(Method::POST, unkeyed(Op::AdvanceClock)),
        )
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { json(StatusCode::OK, "{\"status\":\"ok\"}".into()) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves; then
/// stops accepting, lets open connections finish the requests they are in
/// (idle keep-alive connections are closed), and returns once they have,
/// or after [`DRAIN_TIMEOUT`]. The caller then shuts the engine down.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let draining = Arc::clone(&draining);
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; answering requests in flight");
            draining.notify_one();
        }
    };
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::select! {
        served = server => served,
        () = async {
            draining.notified().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}: no longer waiting");
            Ok(())
        }
    }
}

/// What a request's answer says, for the metrics and the log line.
struct Answered {
    response: Response,
    result: &'static str,
    replayed: bool,
}

async fn handle(
    state: AppState,
    route: OpRoute,
    path: Result<Path<Vec<(String, String)>>, PathRejection>,
    query: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let answered = match to_request(route, path, query.as_deref(), &headers, body) {
        Ok(request) => submit(&state.inner.backend, request).await,
        Err(bad) => bad_input(&bad),
    };
    let elapsed = started.elapsed();
    let op = route.op.name();
    telemetry::record_request(op, answered.result, answered.replayed, elapsed);
    tracing::debug!(
        op,
        result = answered.result,
        status = answered.response.status().as_u16(),
        replayed = answered.replayed,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    answered.response
}

/// The path's integers, the key and the body, as one engine request.
fn to_request(
    route: OpRoute,
    path: Result<Path<Vec<(String, String)>>, PathRejection>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<debitcore::Request, BadInput> {
    let Path(params) = path.map_err(|e| BadInput::new(GatewayError::Malformed, e.body_text()))?;
    // At most three fields: account and auth (or a status's id) from the
    // path, a keyed op's id from the header (or history's two from the
    // query string).
    let mut fields: Vec<(&str, u64)> = Vec::with_capacity(3);
    for (name, text) in &params {
        let name = match name.as_str() {
            "account" => "account",
            "auth" => "auth",
            "id" => "id",
            "merchant" => "merchant",
            other => unreachable!("route parameter {other} is not a request field"),
        };
        let value = line::parse_u64(text).ok_or_else(|| {
            BadInput::new(
                GatewayError::Malformed,
                format!("{name} in the path must be an unsigned 64-bit integer"),
            )
        })?;
        fields.push((name, value));
    }
    line::query_fields(query.unwrap_or(""), route.query_fields, &mut fields)?;
    if route.keyed {
        let mut keys = headers.get_all(IDEMPOTENCY_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (None, _) => {
                return Err(BadInput::new(
                    GatewayError::MissingIdempotencyKey,
                    format!(
                        "{} needs an Idempotency-Key header: the request's id, an unsigned \
                         64-bit integer, the same on every retry",
                        route.op.name()
                    ),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(BadInput::new(
                    GatewayError::InvalidIdempotencyKey,
                    "Idempotency-Key given more than once",
                ))
            }
            (Some(value), None) => line::parse_key(value.as_bytes())?,
        };
        fields.push(("id", key));
    }
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(BadInput::new(
                GatewayError::BodyTooLarge,
                format!("the body is over {BODY_BYTES_MAX} bytes"),
            ))
        }
        Err(e) => return Err(BadInput::new(GatewayError::InvalidJson, e.body_text())),
    };
    let body = route.reads_body.then_some(&body[..]);
    line::to_request(route.op, &fields, body)
}

/// Hands the request to the backend and answers with its outcome.
async fn submit(backend: &Backend, request: debitcore::Request) -> Answered {
    let outcome = match backend {
        Backend::Engine(engine) => CatchUnwind(engine.submit_async(request)).await,
        Backend::Bypass => Ok(Outcome::new(Code::Ok)),
    };
    match outcome {
        Ok(outcome) => outcome_response(&outcome),
        Err(()) => gateway_error(
            GatewayError::EngineFailed,
            "a shard worker failed; the engine cannot answer (see the gateway's log)",
        ),
    }
}

/// The response to an outcome: its status, and its fields (ok,
/// held_for_review) or an error body (rejections).
fn outcome_response(outcome: &Outcome) -> Answered {
    let code = outcome.code;
    let status = status::http_status(code);
    let body = if status.is_success() {
        ok_body(outcome)
    } else {
        error_body(code.name(), status::message(code))
    };
    let mut response = json(status, body);
    if outcome.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Answered {
        response,
        result: code.name(),
        replayed: outcome.replayed,
    }
}

/// `{"result": "ok", ...}` with the outcome's fields as in the line format.
fn ok_body(outcome: &Outcome) -> String {
    let mut body = String::with_capacity(96);
    body.push_str("{\"result\":\"");
    body.push_str(outcome.code.name());
    body.push('"');
    match &outcome.info {
        Info::None => {}
        Info::Balance { currency, .. } => {
            if let Some([balance, held, available]) = outcome.balance_strings() {
                for (name, value) in [
                    ("currency", currency.code()),
                    ("balance", &balance),
                    ("held", &held),
                    ("available", &available),
                ] {
                    body.push_str(",\"");
                    body.push_str(name);
                    body.push_str("\":\"");
                    body.push_str(value);
                    body.push('"');
                }
            }
        }
        Info::History(page) => {
            let e = page.currency.exponent();
            body.push_str(",\"entries\":[");
            for (i, entry) in page.entries.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    "{{\"seq\":{},\"id\":{},\"op\":\"{}\",\"result\":\"{}\",\"time\":{}",
                    entry.seq,
                    entry.id,
                    entry.op.name(),
                    entry.result.name(),
                    entry.time
                ));
                if let Some(moved) = entry.moved {
                    body.push_str(&format!(
                        ",\"amount\":\"{}\",\"balance\":\"{}\"",
                        debitcore::money::format_minor(moved.amount, e),
                        debitcore::money::format_minor(moved.balance, e)
                    ));
                }
                if let Some(merchant) = entry.merchant {
                    body.push_str(&format!(",\"merchant\":{merchant}"));
                }
                body.push('}');
            }
            body.push(']');
        }
        // Every other field as the line format has it (one list of them:
        // `codec::for_each_field`), without the spaces.
        _ => debitcore::codec::for_each_field(outcome, |name, value| {
            body.push_str(",\"");
            body.push_str(name);
            body.push_str("\":");
            match value {
                debitcore::codec::Field::Int(v) => body.push_str(&v.to_string()),
                debitcore::codec::Field::Text(text) => {
                    body.push('"');
                    body.push_str(text);
                    body.push('"');
                }
            }
        }),
    }
    body.push('}');
    body
}

/// `{"error": {"code": "...", "message": "..."}}`.
fn error_body(code: &str, message: &str) -> String {
    let message = serde_json::to_string(message).expect("a string serializes");
    format!("{{\"error\":{{\"code\":\"{code}\",\"message\":{message}}}}}")
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn gateway_error(error: GatewayError, message: &str) -> Answered {
    Answered {
        response: json(error.http_status(), error_body(error.name(), message)),
        result: error.name(),
        replayed: false,
    }
}

fn bad_input(bad: &BadInput) -> Answered {
    gateway_error(bad.error, &bad.message)
}

/// Routes that do not exist, and routes with the wrong method, are
/// counted under `op="none"`.
const NO_OP: &str = "none";

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!("no route {method} {}", uri.path());
    unrouted(GatewayError::NotFound, &message)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{} does not take {method}", uri.path());
    unrouted(GatewayError::MethodNotAllowed, &message)
}

fn unrouted(error: GatewayError, message: &str) -> Response {
    let answered = gateway_error(error, message);
    telemetry::record_request(NO_OP, answered.result, false, Duration::ZERO);
    tracing::debug!(
        op = NO_OP,
        result = answered.result,
        status = answered.response.status().as_u16(),
        "{message}"
    );
    answered.response
}

/// `GET /metrics`: the Prometheus text format, with every shard's stats
/// read now.
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.inner.metrics else {
        return unrouted(GatewayError::NotFound, "metrics are off");
    };
    let engine_histograms = match &state.inner.backend {
        Backend::Engine(engine) => telemetry::record_engine_stats(engine),
        Backend::Bypass => String::new(),
    };
    handle.run_upkeep();
    let mut text = handle.render();
    text.push_str(&engine_histograms);
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// A future that answers `Err(())` if polling it panics: an
/// `OutcomeFuture` panics when the shard worker it waits on has failed,
/// and that must be a 500, not a dropped connection.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}
