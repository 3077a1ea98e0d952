//! HFXEventStash's example message `contact.AddressBook`, encoded by prost
//! derive — an encoder independent of the filter's prost-reflect decoder.
//! Shared by the decoding tests and the benchmark.
#![allow(dead_code)]

use prost::Message as _;

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddressBook {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, repeated, tag = "2")]
    pub people: Vec<Person>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Person {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub email: String,
    #[prost(message, repeated, tag = "3")]
    pub phones: Vec<PhoneNumber>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PhoneNumber {
    #[prost(string, tag = "1")]
    pub number: String,
    #[prost(int32, tag = "2")]
    pub r#type: i32,
}

/// The reference address book with `people` copies of John Doe, encoded.
pub fn address_book_bytes(people: usize) -> Vec<u8> {
    let person = Person {
        name: "John Doe".into(),
        email: "john.doe@foo.bar".into(),
        phones: vec![PhoneNumber {
            number: "+55 (11) 1111-1111".into(),
            r#type: 1,
        }],
    };
    AddressBook {
        id: "ab-1".into(),
        people: vec![person; people],
    }
    .encode_to_vec()
}
