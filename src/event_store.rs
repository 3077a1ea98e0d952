//! The event store as the gRPC input gets it: the configured store behind
//! the pipeline's filters, so that a change set is stored decoded (PROTOBUF
//! payloads as the protobuf filter's JSON, undecodable ones flagged, never
//! dropped) in the same document shape as every output's.
//!
//! The filters run on the change set's events before the append, with the
//! same panic isolation as the filter stage. The pipeline runs them again
//! when the committed events are handed on; filters leave events they
//! already changed as they are, so that costs a check, not a decode.

use std::sync::Arc;

use async_trait::async_trait;
use eventstash_plugin_api::{Aggregate, Appended, ChangeSetPage, EventStore, EventStoreError, NewChangeSet};

use crate::config::FilterPlugin;
use crate::pipeline::apply_isolated;

/// An event store whose appends are filtered first.
pub(crate) struct FilteredEventStore {
    /// The configured store.
    store: Arc<dyn EventStore>,
    /// `[pipeline] id`, for the filters' metric labels.
    pipeline: String,
    /// The pipeline's filters, in file order.
    filters: Arc<[FilterPlugin]>,
}

impl FilteredEventStore {
    pub(crate) fn new(store: Arc<dyn EventStore>, pipeline: &str, filters: Arc<[FilterPlugin]>) -> FilteredEventStore {
        FilteredEventStore {
            store,
            pipeline: pipeline.to_owned(),
            filters,
        }
    }
}

#[async_trait]
impl EventStore for FilteredEventStore {
    async fn ready(&self) -> Result<(), EventStoreError> {
        self.store.ready().await
    }

    async fn append(&self, mut change_set: NewChangeSet) -> Result<Appended, EventStoreError> {
        if !self.filters.is_empty() {
            apply_isolated(&self.pipeline, &self.filters, &mut change_set.events);
        }
        self.store.append(change_set).await
    }

    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<Aggregate>, EventStoreError> {
        self.store.aggregate(aggregate_id).await
    }

    async fn read_page(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<ChangeSetPage, EventStoreError> {
        self.store.read_page(aggregate_id, from_version, limit).await
    }
}
