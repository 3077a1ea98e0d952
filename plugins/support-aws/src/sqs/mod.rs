//! What the SQS input and output share: the client, the queue, what a
//! failed request means, the framing of packed messages, and the count of
//! requests (what SQS bills).

pub mod client;
pub mod metrics;
pub mod packed;
pub mod queue;
pub mod retry;
