//! The TLS crypto provider for outgoing HTTPS (WeCom's API). reqwest is built without a provider so that
//! rustls uses ring rather than aws-lc-rs (which needs a larger C build); a provider must then be installed
//! before any client is built, or building it panics. Every client in the project comes from
//! [`client_builder`].

/// Installs ring as the process-wide rustls provider. Idempotent: if one is already installed (by an earlier
/// call or by a program embedding this library), that one stays.
pub fn install_provider() {
    // Err only means a provider is installed already; any installed provider will do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `reqwest::Client::builder()`, after making sure a TLS provider is installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}
