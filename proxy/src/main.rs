//! `fluxbase`: load and validate config, set up logging, run.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

// glibc's malloc, not mimalloc: a streamed 20 MB response raised the peak
// RSS by 29 MB under mimalloc (buffers allocated on one runtime thread and
// freed on another are not reused soon) and by 2.5 MB under glibc; REST
// reads were within noise of each other (docs/benchmarks.md).

// Shared plumbing: never imports a service.
mod config;
mod db;
mod error;
mod http;
mod jwt;
mod listener;
mod metrics;
mod state;

// One room per service: each imports plumbing, never another service.
mod auth;
mod realtime;
mod rest;
mod storage;

// The composition: builds the services and routes requests to them.
mod app;
mod cli;
mod server;

use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use cli::Command;
use config::Config;

/// sysexits' EX_USAGE / EX_CONFIG-style exit code for bad invocations and config.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match cli::parse(&argv, std::env::var("FLUXBASE_CONFIG").ok()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fluxbase: {e}\n{}", cli::USAGE);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match args.command {
        Command::Help => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::GenSigningKey { path, kid, alg } => {
            return match auth::signing::generate(&path, kid, &alg) {
                Ok(kid) => {
                    println!("{kid}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fluxbase: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::GenConfig { path, database_url } => {
            return match cli::gen_config(&path, &database_url) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fluxbase: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let config = match Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fluxbase: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match args.command {
        // Building the app judges what only the services can (keys,
        // providers, templates); nothing connects to the database.
        Command::CheckConfig => match app::App::new(config) {
            Ok(_) => {
                println!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fluxbase: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Keys => {
            print!("{}", cli::keys(&config));
            ExitCode::SUCCESS
        }
        Command::Sign { claims, expires_in } => match cli::sign(&config, &claims, expires_in) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fluxbase: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::HashRate { seconds } => match cli::hash_rate(&config, seconds) {
            Ok(line) => {
                print!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fluxbase: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::S3Keys(command) => match cli::s3_keys(&config, &command) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fluxbase: {e}");
                ExitCode::FAILURE
            }
        },
        _ => serve(config),
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
}

fn serve(config: Config) -> ExitCode {
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fluxbase: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let app = match app::App::new(config) {
            Ok(app) => Arc::new(app),
            Err(e) => {
                eprintln!("fluxbase: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let state = app.state().clone();
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fluxbase: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match db::pg_config(&state.config.database) {
            Ok(pg) => {
                tokio::spawn(listener::run(state.clone(), pg, shutdown.clone()));
            }
            Err(e) => tracing::error!(error = %e, "NOTIFY listener not started"),
        }
        tracing::info!(address = %listen, version = env!("CARGO_PKG_VERSION"), "fluxbase listening");
        server::serve(app, listener, shutdown).await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
