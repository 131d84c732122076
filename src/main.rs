//! The `websocket-bridge` binary: parse flags (command line > environment > `--config` file >
//! defaults), validate the configuration (exit 64 on a bad one), bind the listener, run until
//! SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::error::ErrorKind;
use tracing_subscriber::EnvFilter;
use websocket_bridge::{Cli, Config};
use websocket_bridge::{CliError, LogFormat};

/// mimalloc: measured to cut the bridge's CPU per message (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_USAGE: the command was used incorrectly.
const EX_USAGE: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: a service is unavailable (e.g. the port is taken).
const EX_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = match Cli::parse_layered(std::env::args_os()) {
        Ok(cli) => cli,
        Err(CliError::Clap(e))
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("websocket-bridge: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let check_only = cli.check_config;
    let log_format = cli.log_format;
    let config = match Config::try_from(cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("websocket-bridge: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if check_only {
        print!("{}", config.describe());
        println!("# configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logs(log_format);
    // Before any socket is opened: the stock soft limit (1024) holds about 500 clients.
    match websocket_bridge::raise_soft_limit() {
        Ok(raised) if raised.now.soft > raised.from => tracing::info!(
            from = raised.from,
            to = raised.now.soft,
            "raised the open-files limit (RLIMIT_NOFILE) to the hard limit"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "going on with the open-files limit in force"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("websocket-bridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match websocket_bridge::bind(config.address()) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!(
                    "websocket-bridge: cannot listen on {} (--address): {e}",
                    config.address()
                );
                return ExitCode::from(EX_UNAVAILABLE);
            }
        };
        match websocket_bridge::run(listener, config, websocket_bridge::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("websocket-bridge: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        }
    })
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
