//! What the SQS input and output share: the client, the queue and what a
//! failed request means.

pub mod client;
pub mod queue;
pub mod retry;
