//! `delegate worker`: a brother that connects out to a NATS server and serves tasks.

// agentbus tasks (`delegate worker --agentbus`), wire-compatible with the agentbus package.
pub mod agentbus;
