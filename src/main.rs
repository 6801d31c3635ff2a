//! The `schemagate` command: CLI, logging and exit codes over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::time::Duration;

use schemagate::accesslog::{AccessLog, AccessTarget, Open, Reopen, Writer};
use schemagate::config::{LogColor, LogFormat};
use schemagate::reload::{Loader, Reloader, Trigger};
use schemagate::snapshot::Logging;
use schemagate::{Gateway, Snapshot};

/// mimalloc instead of glibc's malloc: a request allocates a few dozen short-lived
/// buffers (header maps, parsed JSON, futures), and glibc spent ~12 % of a forwarded
/// request's instructions in malloc/free (bench/callgrind.sh); see ARCHITECTURE.md, Choices.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "schemagate",
    version,
    about = "A schema-validating API gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default command).
    Serve {
        /// Config file.
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
    },
    /// Load and compile the config and every file it names; print the routes or every error.
    Check {
        /// Config file.
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
    },
    /// Print an OpenAPI 3.1 document of the configured routes (JSON, on stdout).
    Openapi {
        /// Config file.
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
    },
    /// Print the SHA-256 of an API key read from stdin, for `api_keys[].sha256`.
    HashKey,
    /// Check one request offline and print the status and body the gateway would answer.
    Validate {
        /// Config file.
        #[arg(long, default_value = "config/gateway.yaml")]
        config: PathBuf,
        /// Route name, as in the config.
        #[arg(long)]
        route: String,
        /// File holding the request body.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Raw query string, e.g. `locationId=abc&limit=5`.
        #[arg(long)]
        query: Option<String>,
        /// Request path, to fill path parameters (default: the route's template).
        #[arg(long)]
        path: Option<String>,
        /// A request header `Name: value`; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    schemagate::tls::install_default();
    let command = cli.command.unwrap_or(Command::Serve {
        config: PathBuf::from("config/gateway.yaml"),
    });
    match command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
        Command::Openapi { config } => openapi(&config),
        Command::HashKey => hash_key(),
        Command::Validate {
            config,
            route,
            body,
            query,
            path,
            headers,
        } => validate(
            &config,
            &route,
            body.as_deref(),
            query.as_deref(),
            path.as_deref(),
            &headers,
        ),
    }
}

fn validate(
    config: &std::path::Path,
    route_name: &str,
    body: Option<&std::path::Path>,
    query: Option<&str>,
    path: Option<&str>,
    header_args: &[String],
) -> ExitCode {
    let snapshot = match Snapshot::load(config) {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            return ExitCode::from(2);
        }
    };
    let Some((index, route)) = snapshot
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| r.name == route_name)
    else {
        let names: Vec<_> = snapshot.routes.iter().map(|r| r.name.as_str()).collect();
        eprintln!(
            "error: no route named {route_name:?} (routes: {})",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut headers = http::HeaderMap::new();
    for arg in header_args {
        let parsed = arg.split_once(':').and_then(|(name, value)| {
            Some((
                http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(value.trim()).ok()?,
            ))
        });
        match parsed {
            Some((name, value)) => {
                headers.append(name, value);
            }
            None => {
                eprintln!("error: --header {arg:?} is not of the form `Name: value`");
                return ExitCode::from(2);
            }
        }
    }
    let body = match body.map(std::fs::read).transpose() {
        Ok(body) => body.map(bytes::Bytes::from),
        Err(error) => {
            eprintln!("error: cannot read the body file: {error}");
            return ExitCode::from(2);
        }
    };
    if body.is_some() && !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    let request_path = path.unwrap_or(&route.path);
    let params = match snapshot.router.find(&route.method, request_path) {
        Ok(found) if found.route == index => found.params,
        _ => {
            eprintln!(
                "error: path {request_path:?} does not match route {route_name} ({})",
                route.path
            );
            return ExitCode::from(2);
        }
    };
    let parts = schemagate::validate::Parts {
        headers: &headers,
        query,
        params: &params,
        body: body.as_ref(),
    };
    match schemagate::proxy::dry_run(route, &snapshot.api_keys, &parts) {
        Ok(report) if report.is_empty() => {
            print_out(&format!(
                "200 forwarded: the request is valid for {route_name}\n"
            ));
            ExitCode::SUCCESS
        }
        Ok(report) => {
            let mut text = String::from("200 forwarded (report-only route), with:\n");
            for problem in report.messages {
                text.push_str(&format!("  {problem}\n"));
            }
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(error) => {
            let status = error.status();
            let (body, _) = error.body(route.error_style);
            print_out(&format!(
                "{} {}\n{}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                String::from_utf8_lossy(&body)
            ));
            ExitCode::FAILURE
        }
    }
}

/// Reads one key from stdin (a trailing newline is not part of it) and prints its hash.
fn hash_key() -> ExitCode {
    let mut key = String::new();
    if let Err(error) = std::io::stdin().read_line(&mut key) {
        eprintln!("error: cannot read the key from stdin: {error}");
        return ExitCode::from(2);
    }
    let key = key.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        eprintln!("error: no key on stdin (try: printf %s \"$KEY\" | schemagate hash-key)");
        return ExitCode::from(2);
    }
    print_out(&format!("{}\n", schemagate::auth::hash_key(key.as_bytes())));
    ExitCode::SUCCESS
}

fn check(config: &std::path::Path) -> ExitCode {
    match Snapshot::load(config) {
        Ok(snapshot) => {
            let unreachable = fetch_jwks(&snapshot);
            if !unreachable.is_empty() {
                for error in &unreachable {
                    eprintln!("error: {error}");
                }
                eprintln!("{}: {} error(s)", config.display(), unreachable.len());
                return ExitCode::FAILURE;
            }
            print_out(&snapshot.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            eprintln!("{}: {} error(s)", config.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

/// `check` fetches every `jwks_url` once: a JWK Set that cannot be had is an error there
/// (`serve` logs it and retries, answering 401 meanwhile).
fn fetch_jwks(snapshot: &Snapshot) -> Vec<String> {
    let remote: Vec<_> = snapshot.jwt.iter().filter(|p| p.remote.is_some()).collect();
    if remote.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return vec![format!("cannot start the runtime: {error}")],
    };
    runtime.block_on(async {
        let mut errors = Vec::new();
        for provider in remote {
            if let (Err(error), Some(remote)) = (provider.fetch().await, &provider.remote) {
                errors.push(format!(
                    "{}: cannot fetch the JWK Set from {}: {error}",
                    remote.located, remote.url
                ));
            }
        }
        errors
    })
}

/// Loads the config as `check` does (same errors, same exit code 1), then prints the
/// OpenAPI document of its routes.
fn openapi(config: &std::path::Path) -> ExitCode {
    let snapshot = match Snapshot::load(config) {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            eprintln!("{}: {} error(s)", config.display(), errors.len());
            return ExitCode::FAILURE;
        }
    };
    let mut files = match &snapshot.schema_dir {
        Some(dir) => match schemagate::schema::SchemaDir::scan(dir) {
            Ok(scanned) => scanned.documents(),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => Vec::new(),
    };
    // Routes from OpenAPI documents: their schemas, as files under `openapi/`.
    if !snapshot.openapi_files.is_empty() {
        match snapshot.openapi_export_files() {
            Ok(exported) => files.extend(exported),
            Err(errors) => {
                for error in &errors {
                    eprintln!("error: {error}");
                }
                return ExitCode::FAILURE;
            }
        }
    }
    let docs = schemagate::openapi::SchemaDocs::new(files);
    match schemagate::openapi::document(&snapshot, &docs) {
        Ok(document) => {
            use std::io::Write;
            let text = schemagate::openapi::render(&document);
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: cannot write the document: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: &std::path::Path) -> ExitCode {
    let loader = Loader::new(config);
    let snapshot = match loader.load() {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    init_logging(&snapshot.logging);
    let (access_log, access_writer) = match start_access_log(config, &snapshot.logging) {
        Ok(Some((log, writer))) => (log, Some(writer)),
        Ok(None) => (AccessLog::off(), None),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    // One worker (`TOKIO_WORKER_THREADS=1`, as bench/ runs it next to one nginx worker): the
    // single-threaded scheduler, which is what one worker amounts to without the
    // multi-threaded one's work-stealing queues, atomics and thread hand-offs.
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if one_worker {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let routes = snapshot.routes.len();
        let mut gateway = match Gateway::bind_with_access_log(snapshot, access_log).await {
            Ok(gateway) => gateway,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        let reloader = gateway.reloadable(loader);
        // Dropping the watch stops it; it lives until `run` returns.
        let _watch = match reloader.watch(RELOAD_DEBOUNCE) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, "files are not watched; reload with SIGHUP");
                None
            }
        };
        reload_on_sighup(
            Arc::clone(&reloader),
            access_writer.as_ref().map(Writer::reopener),
        );
        let shutdown = shutdown_signal();
        for addr in gateway.local_addrs() {
            say(&format!(
                "schemagate listening on http://{addr} ({routes} routes from {})",
                config.display()
            ));
        }
        if let Some(addr) = gateway.admin_addr() {
            say(&format!(
                "schemagate admin on http://{addr} (dashboard, /metrics, /status)"
            ));
        }
        gateway.run(shutdown).await;
        ExitCode::SUCCESS
    });
    // Every request has been answered (or the drain gave up): the last access lines out.
    if let Some(writer) = access_writer {
        if !writer.finish(ACCESS_LOG_FLUSH) {
            eprintln!(
                "warning: the access log's last lines were not written within {}s (its sink is not taking them)",
                ACCESS_LOG_FLUSH.as_secs()
            );
        }
    }
    code
}

/// A command's output on stdout. Unlike `print!`, a reader that went away (`schemagate check
/// | head`) ends the output quietly instead of panicking.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints a line to stderr, with the diagnostics (stdout is the access log's). Unlike
/// `eprintln!`, a closed stderr (a supervisor that stopped reading) is ignored instead of
/// panicking the server.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Diagnostics (startup, reloads, warnings, errors) go to stderr: text by default, JSON lines
/// when the config says so, coloured only as `logging.color` allows; `RUST_LOG` filters them
/// (default `info`). Access lines are not diagnostics: see [`start_access_log`].
fn init_logging(logging: &Logging) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(logging.color));
    match logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether diagnostics on stderr carry ANSI colour: `auto` only on a terminal, and not when
/// `NO_COLOR` is set to anything (https://no-color.org).
fn colour(setting: LogColor) -> bool {
    use std::io::IsTerminal;
    match setting {
        LogColor::Always => true,
        LogColor::Never => false,
        LogColor::Auto => {
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// Opens `logging.access`'s sink and starts the access log's writer thread (`None`: off).
fn start_access_log(
    config: &std::path::Path,
    logging: &Logging,
) -> Result<Option<(AccessLog, Writer)>, String> {
    let (sink, reopen): (Box<dyn std::io::Write + Send>, Option<Open>) = match &logging.access {
        AccessTarget::Off => return Ok(None),
        AccessTarget::Stdout => (Box::new(std::io::stdout()), None),
        AccessTarget::Stderr => (Box::new(std::io::stderr()), None),
        AccessTarget::File(path) => {
            let append = |path: &std::path::Path| {
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
            };
            let file = append(path).map_err(|error| {
                let line = logging
                    .access_line
                    .map_or(String::new(), |line| format!(":{line}"));
                format!(
                    "{}{line}: logging.access: cannot open {}: {error}",
                    config.display(),
                    path.display()
                )
            })?;
            // SIGHUP opens the path again: after logrotate moved the file away, lines go to
            // a new file at the same path.
            let path = path.clone();
            let reopen: Open = Box::new(move || {
                append(&path).map(|f| Box::new(f) as Box<dyn std::io::Write + Send>)
            });
            (Box::new(file), Some(reopen))
        }
    };
    AccessLog::start(sink, reopen, logging.format, logging.access_buffer)
        .map(Some)
        .map_err(|error| format!("cannot start the access log's writer: {error}"))
}

/// How long the exit waits for the access log's last lines to be written.
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(5);

/// Quiet time after a file change before the config is reloaded, so a file written in two
/// parts is read once, complete.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

/// Reloads on every SIGHUP (and opens a file access log again, for log rotation), for as
/// long as the process runs. The handler is registered
/// before this returns: registered later (inside the task), a SIGHUP right after startup
/// would meet the default action and kill the process.
fn reload_on_sighup(reloader: Arc<Reloader>, access_log: Option<Reopen>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                if let Some(access_log) = &access_log {
                    access_log.request();
                }
                // Errors are logged and kept in the status by `reload`.
                let _ = reloader.reload(Trigger::Signal).await;
            }
        });
    }
    #[cfg(not(unix))]
    drop((reloader, access_log));
}

/// A future that completes on SIGTERM or SIGINT. The handlers are registered before this
/// returns, so a signal sent right after the "listening" line is not lost (or fatal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate()).ok()
    };
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}
