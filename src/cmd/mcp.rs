//! `delegate mcp`: the MCP server on stdio (see `src/mcp.rs`).

use std::path::Path;

use anyhow::Result;

pub fn run(_config: Option<&Path>) -> Result<()> {
    anyhow::bail!("delegate mcp: not built yet")
}
