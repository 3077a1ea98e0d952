//! A protobuf producer: stores `contact.AddressBook` messages (the example
//! proto in `protos/examples/contact/addressbook.proto`, HFXEventStash's
//! reference), which the agent decodes with its protobuf filter.
//!
//! ```sh
//! eventstash run -c pipelines/default.toml &
//! cargo run -p eventstash-client --example protobuf_producer -- 127.0.0.1:42043
//! ```
//! The messages are written with prost's derive here; a real producer
//! would generate them from the .proto with `prost-build`. Either way the
//! event's kind is the message's full name, from `prost::Name`.

use eventstash_client::{Client, Error, Event};

/// `contact.AddressBook`.
#[derive(Clone, PartialEq, prost::Message)]
struct AddressBook {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(message, repeated, tag = "2")]
    people: Vec<Person>,
}

impl prost::Name for AddressBook {
    const NAME: &'static str = "AddressBook";
    const PACKAGE: &'static str = "contact";
}

/// `contact.Person`.
#[derive(Clone, PartialEq, prost::Message)]
struct Person {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    email: String,
    #[prost(message, repeated, tag = "3")]
    phones: Vec<PhoneNumber>,
}

/// `contact.Person.PhoneNumber`.
#[derive(Clone, PartialEq, prost::Message)]
struct PhoneNumber {
    #[prost(string, tag = "1")]
    number: String,
    /// `contact.Person.PhoneType`: MOBILE 0, HOME 1, WORK 2.
    #[prost(int32, tag = "2")]
    r#type: i32,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:42043".to_owned());
    let client = Client::connect(addr).await?;
    let book = AddressBook {
        id: "ab-1".to_owned(),
        people: vec![Person {
            name: "John Doe".to_owned(),
            email: "john.doe@foo.bar".to_owned(),
            phones: vec![PhoneNumber {
                number: "+55 (11) 1111-1111".to_owned(),
                r#type: 1,
            }],
        }],
    };
    // Kind "contact.AddressBook", format PROTOBUF; stored in the index
    // contact-address-book.
    client.store([Event::protobuf(&book).with_id("ab-1")]).await?;
    println!("address book ab-1 stored");
    Ok(())
}
