//! [`Event`]: one event to store, built from a JSON value, raw bytes or a
//! protobuf message, and turned into the `StoreEventRequest` it is sent as.

use bytes::Bytes;

use crate::proto::StoreEventRequest;
use crate::proto::store_event_request::EventFormat;

/// How an event's payload is encoded; the agent decodes it accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text.
    Json,
    /// A protobuf message of the type named by the event's kind.
    Protobuf,
}

/// An event to store: a payload, its format, its kind and perhaps an id.
///
/// Without an id the agent gives the event a fresh one, so an event sent
/// twice (after a resend-safe failure) is stored twice; with an id, outputs
/// keyed by id overwrite the first copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The message sent; built once, so sending (or resending) copies no payload.
    request: StoreEventRequest,
}

impl Event {
    /// A JSON event of `kind` (empty: the agent's default, `"event"`).
    pub fn json(kind: impl Into<String>, value: &serde_json::Value) -> Event {
        Event::bytes(Format::Json, kind, value.to_string())
    }

    /// A protobuf event: `message` encoded, its kind the message's full
    /// name (`contact.AddressBook`), which is how the agent finds its type.
    pub fn protobuf<M: prost::Message + prost::Name>(message: &M) -> Event {
        Event::bytes(Format::Protobuf, M::full_name(), message.encode_to_vec())
    }

    /// An event whose payload is already encoded in `format`.
    pub fn bytes(format: Format, kind: impl Into<String>, data: impl Into<Bytes>) -> Event {
        let format = match format {
            Format::Json => EventFormat::Json,
            Format::Protobuf => EventFormat::Protobuf,
        };
        Event {
            request: StoreEventRequest {
                format: format as i32,
                data: data.into(),
                kind: kind.into(),
                id: String::new(),
            },
        }
    }

    /// The same event with the id `id`, which makes a resend overwrite
    /// instead of duplicate.
    pub fn with_id(mut self, id: impl Into<String>) -> Event {
        self.request.id = id.into();
        self
    }

    /// The event's kind.
    pub fn kind(&self) -> &str {
        &self.request.kind
    }

    /// The event's id; empty if the agent is to choose one.
    pub fn id(&self) -> &str {
        &self.request.id
    }

    /// The encoded payload.
    pub fn data(&self) -> &Bytes {
        &self.request.data
    }

    /// The message this event is sent as.
    pub fn into_request(self) -> StoreEventRequest {
        self.request
    }
}

/// A JSON event of the default kind.
impl From<serde_json::Value> for Event {
    fn from(value: serde_json::Value) -> Event {
        Event::json("", &value)
    }
}

/// Any message, sent as it is (for formats or kinds the constructors do not
/// cover, such as payloads that are deliberately invalid).
impl From<StoreEventRequest> for Event {
    fn from(request: StoreEventRequest) -> Event {
        Event { request }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Ping {
        #[prost(string, tag = "1")]
        id: String,
    }

    impl prost::Name for Ping {
        const NAME: &'static str = "Ping";
        const PACKAGE: &'static str = "test.v1";
    }

    #[test]
    fn a_protobuf_event_is_named_by_its_message() {
        let event = Event::protobuf(&Ping { id: "p-1".into() }).with_id("e-1");
        assert_eq!(event.kind(), "test.v1.Ping");
        assert_eq!(event.id(), "e-1");
        let request = event.into_request();
        assert_eq!(request.format, EventFormat::Protobuf as i32);
        assert_eq!(<Ping as prost::Message>::decode(request.data).unwrap().id, "p-1");
    }

    #[test]
    fn a_json_event_carries_the_values_text() {
        let event = Event::json("order.Created", &serde_json::json!({"n": 1}));
        assert_eq!(event.data().as_ref(), br#"{"n":1}"#);
        assert_eq!(event.clone().into_request().format, EventFormat::Json as i32);
        assert_eq!(Event::from(serde_json::json!(true)).kind(), "");
    }
}
