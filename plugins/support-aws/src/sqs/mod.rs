//! What the SQS input and output share: the client, the queue, what a
//! failed request means, and the framing of packed messages.

pub mod client;
pub mod packed;
pub mod queue;
pub mod retry;
