//! `lottery-server`: the central. Reads its configuration from the environment, binds, and serves
//! until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on
//! a bad configuration.

use std::process::ExitCode;

use anyhow::Context;
use lottery::config::ServerConfig;
use lottery::{server, telemetry};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> ExitCode {
    let rust_log = std::env::var("RUST_LOG").ok();
    let config = match ServerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            telemetry::init(tracing::Level::INFO, None);
            error!(action = "config", result = "fail", error = %e);
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.logging_level, rust_log.as_deref());
    info!(
        action = "config",
        result = "success",
        port = config.port,
        listen_backlog = config.listen_backlog,
        logging_level = %config.logging_level,
        agencies = config.agencies,
        ip = %config.ip,
        bets_file = %config.bets_file.display(),
        batch_max_bets = config.batch_max_bets,
    );
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(serve(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(action = "server", result = "fail", error = format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let listener = server::bind(&config)?;
    let address = listener.local_addr().context("cannot read the bound address")?;
    info!(action = "listen", result = "success", address = %address);
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        match lottery::signal::shutdown_signal().await {
            Ok(signal) => info!(action = "shutdown", result = "in_progress", signal),
            Err(e) => error!(action = "shutdown", result = "in_progress", error = %e),
        }
        on_signal.cancel();
    });
    server::run(listener, config, token).await?;
    Ok(())
}
