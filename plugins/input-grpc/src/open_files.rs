//! Raises the process's soft open-file limit to its hard limit at start, as
//! servers commonly do: every client connection is a descriptor, and the
//! usual soft limit of 1024 is far below what the hard limit allows.

use rlimit::Resource;
use tracing::{info, warn};

/// Descriptors the rest of the agent may need besides client connections:
/// output files, queue segments, connections to Elasticsearch and DynamoDB.
const RESERVED_FOR_THE_AGENT: u64 = 64;

/// Raises the soft limit, and warns if `max_connections` cannot all be
/// open at once under the limit there is.
pub(crate) fn raise_open_file_limit(max_connections: usize) {
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return;
    };
    let limit = if soft < hard {
        match rlimit::increase_nofile_limit(hard) {
            Ok(raised) => {
                if raised > soft {
                    info!(
                        from = soft,
                        to = raised,
                        "raised the open-file limit (RLIMIT_NOFILE) to the hard limit"
                    );
                }
                raised
            }
            Err(error) => {
                warn!(soft, hard, %error, "cannot raise the open-file limit (RLIMIT_NOFILE)");
                soft
            }
        }
    } else {
        soft
    };
    let wanted = max_connections as u64 + RESERVED_FOR_THE_AGENT;
    if limit < wanted {
        warn!(
            open_file_limit = limit,
            max_connections,
            "the open-file limit is below `max_connections` plus {RESERVED_FOR_THE_AGENT} for the agent: \
             raise it (ulimit -n) or lower `max_connections`, or clients will wait when descriptors run out"
        );
    }
}
