//! The `schemagate` command: CLI, logging and exit codes over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use schemagate::{Gateway, Snapshot};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        config: PathBuf::from("config/gateway.yaml"),
    });
    match command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => serve(&config),
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    match Snapshot::load(config) {
        Ok(snapshot) => {
            print!("{}", snapshot.summary());
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

fn serve(config: &std::path::Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let snapshot = match Snapshot::load(config) {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            for error in &errors {
                eprintln!("error: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let routes = snapshot.routes.len();
        let gateway = match Gateway::bind(snapshot).await {
            Ok(gateway) => gateway,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        for addr in gateway.local_addrs() {
            println!(
                "schemagate listening on http://{addr} ({routes} routes from {})",
                config.display()
            );
        }
        gateway.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
