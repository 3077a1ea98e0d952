//! The item an event becomes: its key from the key templates, the
//! attributes of the event table, and the checks DynamoDB would otherwise
//! fail the whole request for.
//!
//! | attribute | value |
//! |---|---|
//! | partition key (`RequestId`) | its template, default the event id |
//! | sort key (`Timestamp`) | its template, default `@timestamp` |
//! | `Id`, `Type` | the event's id and kind |
//! | `Source` | the `source` template, default the event's authenticated producer, else the pipeline id; left out when empty |
//! | `Data` | the decoded data as a native map, list or scalar |
//! | `Plain`, `Raw`, `InvalidJson`, `InvalidProto` | payloads that are not JSON data, as in the document |
//! | `attributes` | one string per extra template |
//!
//! An event whose key cannot be made (a template field it lacks, an empty or
//! oversized value), or whose item is over DynamoDB's 400 KB, is refused here
//! with the reason, for the dead-letter file. A key template's missing field
//! is refused rather than written as the literal `%{...}`, because that
//! would give unrelated events one key and they would overwrite each other.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use eventstash_plugin_api::{Event, FieldTemplate, Payload};

use crate::attribute_value::{self, Converted, DataError, MAX_NESTING};
use serde_json::value::RawValue;

/// DynamoDB's largest item, names and values included: 400 KB.
pub(crate) const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's longest partition key value.
const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// DynamoDB's longest sort key value.
const MAX_SORT_KEY_BYTES: usize = 1024;

/// The `Type` attribute: the event's kind, key of `Type-Index`.
pub(crate) const TYPE: &str = "Type";
/// The `Source` attribute, key of `Source-Index`.
pub(crate) const SOURCE: &str = "Source";
const ID: &str = "Id";
const DATA: &str = "Data";
const PLAIN: &str = "Plain";
const RAW: &str = "Raw";
const INVALID_JSON: &str = "InvalidJson";
const INVALID_PROTO: &str = "InvalidProto";

/// The attributes the output writes itself, which `attributes` may not name.
pub(crate) const BUILT_IN_ATTRIBUTES: &[&str] = &[ID, TYPE, SOURCE, DATA, PLAIN, RAW, INVALID_JSON, INVALID_PROTO];

/// A key attribute's name and value template.
#[derive(Debug, Clone)]
pub(crate) struct KeyTemplate {
    pub(crate) name: String,
    pub(crate) value: FieldTemplate,
}

/// How events become items: the checked form of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct ItemSchema {
    pub(crate) partition: KeyTemplate,
    pub(crate) sort: KeyTemplate,
    /// The `source` template; `None` writes `default_source`.
    pub(crate) source: Option<FieldTemplate>,
    /// The pipeline id, the source of events when no template is set.
    pub(crate) default_source: String,
    /// Extra string attributes.
    pub(crate) attributes: Vec<(String, FieldTemplate)>,
    /// What of the data becomes `Data`, and how.
    pub(crate) data: DataSpec,
}

/// The part of an event's data stored as `Data` and its form.
#[derive(Debug, Clone, Default)]
pub(crate) struct DataSpec {
    /// Members to descend into from the data; empty: the whole data.
    pub(crate) path: Vec<String>,
    pub(crate) format: DataFormat,
}

/// How `Data` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum DataFormat {
    /// JSON as native DynamoDB types.
    #[default]
    Native,
    /// The SQS → Lambda design's map of strings.
    Strings,
}

/// An item's primary key, to find duplicates and unprocessed items.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ItemKey {
    pub(crate) partition: String,
    pub(crate) sort: String,
}

/// An event as a ready `PutRequest`.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) key: ItemKey,
    pub(crate) request: WriteRequest,
}

/// Why an event cannot become an item; the text goes to the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ItemError {
    #[error("key attribute `{name}`: the template `{template}` names a field the event lacks")]
    KeyFieldMissing { name: String, template: String },
    #[error("key attribute `{name}` is empty, which DynamoDB does not allow")]
    KeyEmpty { name: String },
    #[error("key attribute `{name}` is {bytes} bytes, over DynamoDB's {limit}")]
    KeyTooLong { name: String, bytes: usize, limit: usize },
    #[error("attribute `Data`: {0}")]
    Data(#[from] DataError),
    #[error("item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte (400 KB) item limit")]
    TooLarge { size: usize },
}

/// Attributes being gathered, with their running size.
struct Attributes {
    map: HashMap<String, AttributeValue>,
    size: usize,
}

impl Attributes {
    /// Adds an attribute unless one of that name is already there: key
    /// attributes go in first and win over built-ins of the same name.
    fn put(&mut self, name: &str, value: Converted) {
        if !self.map.contains_key(name) {
            self.size += name.len() + value.size;
            self.map.insert(name.to_owned(), value.value);
        }
    }
}

impl ItemSchema {
    /// Builds the item of `event`, or says why it cannot be stored.
    pub(crate) fn item(&self, event: &Event) -> Result<Item, ItemError> {
        let partition = render_key(&self.partition, event, MAX_PARTITION_KEY_BYTES)?;
        let sort = render_key(&self.sort, event, MAX_SORT_KEY_BYTES)?;
        let mut attributes = Attributes {
            map: HashMap::with_capacity(8 + self.attributes.len()),
            size: 0,
        };
        attributes.put(&self.partition.name, attribute_value::string(partition.clone()));
        attributes.put(&self.sort.name, attribute_value::string(sort.clone()));
        attributes.put(ID, attribute_value::string(event.id.clone()));
        attributes.put(TYPE, attribute_value::string(event.kind.clone()));
        let source = match &self.source {
            Some(template) => template.render(event),
            None => event.source.clone().unwrap_or_else(|| self.default_source.clone()),
        };
        // An empty string cannot be an index key: such items simply stay
        // out of `Source-Index`.
        if !source.is_empty() {
            attributes.put(SOURCE, attribute_value::string(source));
        }
        put_payload(&mut attributes, &event.payload, &self.data)?;
        for (name, template) in &self.attributes {
            attributes.put(name, attribute_value::string(template.render(event)));
        }
        if attributes.size > MAX_ITEM_BYTES {
            return Err(ItemError::TooLarge { size: attributes.size });
        }
        let put = PutRequest::builder()
            .set_item(Some(attributes.map))
            .build()
            .expect("the item, PutRequest's one required field, is set");
        Ok(Item {
            key: ItemKey { partition, sort },
            request: WriteRequest::builder().put_request(put).build(),
        })
    }

    /// The key of a write request this schema made (an unprocessed item
    /// DynamoDB hands back).
    pub(crate) fn key_of(&self, request: &WriteRequest) -> Option<ItemKey> {
        let item = request.put_request()?.item();
        let text = |name: &str| item.get(name)?.as_s().ok().cloned();
        Some(ItemKey {
            partition: text(&self.partition.name)?,
            sort: text(&self.sort.name)?,
        })
    }
}

fn render_key(key: &KeyTemplate, event: &Event, limit: usize) -> Result<String, ItemError> {
    let value = key.value.render(event);
    // Literal parts of a template never hold `%{` (parsing splits on it),
    // so one in the result is a field the event lacks, left as written.
    if value.contains("%{") {
        return Err(ItemError::KeyFieldMissing {
            name: key.name.clone(),
            template: key.value.as_str().to_owned(),
        });
    }
    if value.is_empty() {
        return Err(ItemError::KeyEmpty { name: key.name.clone() });
    }
    if value.len() > limit {
        return Err(ItemError::KeyTooLong {
            name: key.name.clone(),
            bytes: value.len(),
            limit,
        });
    }
    Ok(value)
}

/// `Data` for decoded payloads (the member `spec` names, in its form); the
/// document's `plain`, `raw` and flags for the others, so that no event is
/// dropped for what it carries.
fn put_payload(attributes: &mut Attributes, payload: &Payload, spec: &DataSpec) -> Result<(), ItemError> {
    match payload {
        Payload::Json(raw) => {
            if let Some(value) = json_member(raw, &spec.path) {
                attributes.put(DATA, data_text(value, spec.format)?);
            }
        }
        Payload::Value(value) => {
            let member = spec.path.iter().try_fold(value, |value, name| value.get(name));
            if let Some(value) = member {
                attributes.put(DATA, data_value(value, spec.format)?);
            }
        }
        Payload::InvalidJson { plain, raw } => {
            attributes.put(PLAIN, attribute_value::string(plain.clone()));
            if let Some(raw) = raw {
                attributes.put(RAW, binary(raw));
            }
            attributes.put(INVALID_JSON, flag());
        }
        Payload::Protobuf(bytes) => attributes.put(RAW, binary(bytes)),
        Payload::InvalidProto(bytes) => {
            attributes.put(RAW, binary(bytes));
            attributes.put(INVALID_PROTO, flag());
        }
    }
    Ok(())
}

/// The member at `path` of JSON text, itself as text.
fn json_member<'a>(raw: &'a RawValue, path: &[String]) -> Option<&'a RawValue> {
    path.iter().try_fold(raw, |raw, name| {
        let members: HashMap<String, &RawValue> = serde_json::from_str(raw.get()).ok()?;
        members.get(name).copied()
    })
}

fn data_text(raw: &RawValue, format: DataFormat) -> Result<Converted, DataError> {
    match format {
        DataFormat::Native => attribute_value::from_json_text(raw.get(), MAX_NESTING),
        DataFormat::Strings => match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(value) => data_value(&value, format),
            Err(_) => attribute_value::from_json_text(raw.get(), MAX_NESTING),
        },
    }
}

fn data_value(value: &serde_json::Value, format: DataFormat) -> Result<Converted, DataError> {
    match (format, value) {
        (DataFormat::Strings, serde_json::Value::Object(members)) => Ok(attribute_value::lambda_strings(members)),
        // Only an object has members to keep; anything else stays whole.
        _ => attribute_value::from_json_value(value, MAX_NESTING),
    }
}

fn binary(bytes: &[u8]) -> Converted {
    Converted {
        value: AttributeValue::B(Blob::new(bytes.to_vec())),
        size: bytes.len(),
    }
}

fn flag() -> Converted {
    Converted {
        value: AttributeValue::Bool(true),
        size: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::TimeZone;
    use eventstash_plugin_api::Format;

    fn schema() -> ItemSchema {
        let template = |text: &str| FieldTemplate::parse(text).unwrap();
        ItemSchema {
            partition: KeyTemplate {
                name: "RequestId".into(),
                value: template("%{[data][requestId]}"),
            },
            sort: KeyTemplate {
                name: "Timestamp".into(),
                value: template("%{@timestamp}"),
            },
            source: Some(template("%{[data][service]}")),
            default_source: "main".into(),
            attributes: vec![("Index".into(), template("%{index}"))],
            data: DataSpec::default(),
        }
    }

    fn event(format: Format, data: &[u8]) -> Event {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap();
        Event::new(
            format,
            Bytes::copy_from_slice(data),
            "contact.AddressBook".into(),
            "e-1".into(),
            at,
        )
    }

    fn attributes(item: &Item) -> &HashMap<String, AttributeValue> {
        item.request.put_request().unwrap().item()
    }

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    #[test]
    fn json_events_become_event_table_items() {
        let data = br#"{"requestId":"r-7","service":"billing","total":12.50}"#;
        let item = schema().item(&event(Format::Json, data)).unwrap();
        assert_eq!(
            item.key,
            ItemKey {
                partition: "r-7".into(),
                sort: "2026-11-23T09:01:40.000Z".into()
            }
        );
        let attributes = attributes(&item);
        assert_eq!(attributes["RequestId"], s("r-7"));
        assert_eq!(attributes["Timestamp"], s("2026-11-23T09:01:40.000Z"));
        assert_eq!(attributes["Id"], s("e-1"));
        assert_eq!(attributes["Type"], s("contact.AddressBook"));
        assert_eq!(attributes["Source"], s("billing"));
        assert_eq!(attributes["Index"], s("contact-address-book"));
        let data = attributes["Data"].as_m().unwrap();
        assert_eq!(data["total"], AttributeValue::N("12.50".into()));
        assert_eq!(attributes.len(), 7);
        assert_eq!(schema().key_of(&item.request), Some(item.key.clone()));
    }

    #[test]
    fn payloads_that_are_not_json_data_are_kept_with_their_flags() {
        let mut schema = schema();
        schema.partition.value = FieldTemplate::parse("%{id}").unwrap();
        schema.source = None;

        let item = schema.item(&event(Format::Json, b"\xff{oops")).unwrap();
        let stored = attributes(&item);
        assert_eq!(stored["Plain"], s("\u{fffd}{oops"));
        assert_eq!(stored["Raw"], AttributeValue::B(Blob::new(b"\xff{oops".to_vec())));
        assert_eq!(stored["InvalidJson"], AttributeValue::Bool(true));
        assert_eq!(stored["Source"], s("main"));
        assert!(!stored.contains_key("Data"));

        let mut produced = event(Format::Json, b"{}");
        produced.source = Some("billing-producer".into());
        let item = schema.item(&produced).unwrap();
        assert_eq!(
            attributes(&item)["Source"],
            s("billing-producer"),
            "the producer beats the pipeline id"
        );

        let item = schema.item(&event(Format::Protobuf, &[10, 1, 97])).unwrap();
        let stored = attributes(&item);
        assert_eq!(stored["Raw"], AttributeValue::B(Blob::new(vec![10, 1, 97])));
        assert!(!stored.contains_key("InvalidProto"));

        let mut invalid = event(Format::Protobuf, &[0xff]);
        invalid.payload = Payload::InvalidProto(Bytes::from_static(&[0xff]));
        let item = schema.item(&invalid).unwrap();
        assert_eq!(attributes(&item)["InvalidProto"], AttributeValue::Bool(true));
    }

    #[test]
    fn a_missing_key_field_is_refused_not_written_literally() {
        let error = schema().item(&event(Format::Json, br#"{"service":"x"}"#)).unwrap_err();
        assert_eq!(
            error,
            ItemError::KeyFieldMissing {
                name: "RequestId".into(),
                template: "%{[data][requestId]}".into()
            }
        );
        let error = schema().item(&event(Format::Json, br#"{"requestId":""}"#)).unwrap_err();
        assert_eq!(
            error,
            ItemError::KeyEmpty {
                name: "RequestId".into()
            }
        );
    }

    #[test]
    fn items_over_400_kb_are_refused_with_their_size() {
        let small = format!(r#"{{"requestId":"r","blob":"{}"}}"#, "x".repeat(400_000));
        assert!(schema().item(&event(Format::Json, small.as_bytes())).is_ok());
        let large = format!(r#"{{"requestId":"r","blob":"{}"}}"#, "x".repeat(MAX_ITEM_BYTES));
        let error = schema().item(&event(Format::Json, large.as_bytes())).unwrap_err();
        let ItemError::TooLarge { size } = &error else {
            panic!("{error:?}")
        };
        assert!(*size > MAX_ITEM_BYTES && *size < MAX_ITEM_BYTES + 200, "{size}");
        assert!(error.to_string().contains("400 KB"), "{error}");
    }

    #[test]
    fn an_empty_source_leaves_the_item_out_of_the_source_index() {
        let item = schema()
            .item(&event(Format::Json, br#"{"requestId":"r","service":""}"#))
            .unwrap();
        assert!(!attributes(&item).contains_key("Source"));
    }

    #[test]
    fn a_number_dynamodb_cannot_hold_refuses_the_event() {
        let error = schema()
            .item(&event(Format::Json, br#"{"requestId":"r","n":1e200}"#))
            .unwrap_err();
        assert!(matches!(error, ItemError::Data(DataError::OutOfRange { .. })));
        assert!(
            error.to_string().starts_with("attribute `Data`: number 1e200"),
            "{error}"
        );
    }

    #[test]
    fn data_field_stores_one_member_natively_or_as_the_lambdas_strings() {
        let message = br#"{"requestId":"r-1","timestamp":"2020-05-01T20:00:00Z","data":{"Name":"A","n":0,"ok":true}}"#;
        let mut schema = schema();
        schema.data.path = vec!["data".into()];
        let item = schema.item(&event(Format::Json, message)).unwrap();
        let data = attributes(&item)["Data"].as_m().unwrap();
        assert_eq!(data["Name"].as_s().unwrap(), "A");
        assert_eq!(data["n"].as_n().unwrap(), "0");
        assert_eq!(data["ok"].as_bool().unwrap(), &true);

        schema.data.format = DataFormat::Strings;
        let item = schema.item(&event(Format::Json, message)).unwrap();
        let data = attributes(&item)["Data"].as_m().unwrap();
        assert_eq!(data["Name"].as_s().unwrap(), "A");
        assert_eq!(data["ok"].as_s().unwrap(), "true");
        assert!(!data.contains_key("n"), "0 is left out as the Lambda did");

        // Without the member, the item has no `Data` (and nothing else is lost).
        schema.data.path = vec!["missing".into()];
        let item = schema.item(&event(Format::Json, message)).unwrap();
        assert!(!attributes(&item).contains_key("Data"));
        assert_eq!(attributes(&item)["RequestId"].as_s().unwrap(), "r-1");
    }
}
