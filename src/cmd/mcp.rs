//! `delegate mcp`: the MCP server on stdio (see `src/mcp.rs`).

use std::path::Path;

use anyhow::{Context, Result};

pub fn run(config: Option<&Path>) -> Result<()> {
    let paths = crate::paths::resolve(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime for the MCP server")?;
    let result = runtime.block_on(crate::mcp::serve(paths, crate::paths::agent_id()));
    // A blocking read of stdin may still be parked on the runtime's thread pool: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}
