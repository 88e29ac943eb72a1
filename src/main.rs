//! The `wecom-callback` binary: parses the command line and reports failures in plain words.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = wecom_callback::cli::Cli::parse();
    match wecom_callback::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
