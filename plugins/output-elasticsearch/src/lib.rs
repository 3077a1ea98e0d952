//! The `elasticsearch` output: stores events with the bulk API, in indices
//! named like HFXEventStash's Logstash named them
//! (`evt-%{index}-%{+xxxx-MM-ww}`), with the event id as `_id` so a retried
//! event overwrites itself.
//!
//! [`ElasticsearchOutputConfig`] is the TOML table, checked by
//! [`ElasticsearchOutputConfig::build`] without contacting the cluster. The
//! [`ElasticsearchOutput`] it builds installs the index template before its
//! first write, reads every item of every bulk response, retries only the
//! items that were throttled or hit a server error, and writes the items
//! Elasticsearch refuses for good to a dead-letter file with the reason.
//! One such event never fails the rest of its batch: an `_id` Elasticsearch
//! would refuse the whole request for is dead-lettered before sending, and a
//! request over the cluster's size limit (413) is sent again in halves until
//! the parts fit or a single event is left, which is dead-lettered.
//!
//! The same table also builds an [`ElasticsearchReplay`], which streams the
//! documents of one kind back in `@timestamp` order (see [`replay`]).
#![warn(missing_docs, unreachable_pub)]

mod bulk;
mod cluster;
mod config;
mod error;
mod index_template;
pub mod replay;
mod response;
mod retry;
mod sink;

pub use bulk::BulkAction;
pub use config::ElasticsearchOutputConfig;
pub use error::ElasticsearchOutputError;
pub use replay::ElasticsearchReplay;
pub use sink::ElasticsearchOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "elasticsearch";
