//! A small HTTP server thread (axum on a current-thread tokio runtime) for
//! the agent's endpoints; the rest of the agent stays synchronous.

use std::net::SocketAddr;

use anyhow::Context as _;

/// Binds `listen` now (so a bad address fails `run` at start) and serves
/// `router` from a background thread named `name`.
pub fn serve(
    name: &str,
    listen: SocketAddr,
    router: axum::Router,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!("binding the {name} endpoint to {listen} (is the port in use?)")
    })?;
    listener.set_nonblocking(true)?;
    let thread = name.to_owned();
    let handle = std::thread::Builder::new().name(thread.clone()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(endpoint = %thread, error = %e, "HTTP runtime failed to start");
                return;
            }
        };
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = axum::serve(l, router).await {
                        tracing::error!(endpoint = %thread, error = %e, "HTTP endpoint stopped");
                    }
                }
                Err(e) => tracing::error!(endpoint = %thread, error = %e, "HTTP endpoint could not start"),
            }
        });
    })?;
    Ok(handle)
}
